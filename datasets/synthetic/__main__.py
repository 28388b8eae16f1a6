"""Command line: `python -m datasets.synthetic --out DIR --seed S --sequences 00 08 --scans N`.

Writes N scans of the synthetic street world into each named sequence of DIR in the SemanticKITTI
layout (see `datasets.synthetic.generate`).
"""

import argparse
import time

from datasets.synthetic.generate import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__)
    parser.add_argument("--out", required=True, help="output root (gets sequences/NN/...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences", nargs="+", default=["00"], help="e.g. 00 08")
    parser.add_argument("--scans", type=int, default=20, help="scans per sequence")
    parser.add_argument(
        "--azimuth_steps", type=int, default=None, help="firings per revolution (default 2048)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate(
        args.out,
        seed=args.seed,
        sequences=args.sequences,
        scans_per_sequence=args.scans,
        azimuth_steps=args.azimuth_steps,
    )
    total = args.scans * len(args.sequences)
    print(f"wrote {total} scans to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
