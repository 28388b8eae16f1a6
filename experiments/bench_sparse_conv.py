"""Benchmark the sparse conv core on a 64-beam LiDAR scan, optionally against spconv's CPU build.

    python experiments/bench_sparse_conv.py [--peer ../shared/tools/spconv_peer.py] [--out FILE]

On one scan of about 120k points voxelised at 0.05 m and 0.1 m, with 2 CPU threads (--threads;
1 compares the dataflows per core), it times (median of --reps after a warm-up): the submanifold
kernel map, SubMConv3d 64->64 forward, forward+backward (the output returned too, so the forward
runs, as in training and in spconv's timing) and the backward alone, and SparseConv3d stride 2
64->128 (with its map); plus a float32 (N x 64) @ (64 x 64) GEMM measured in the same run, and a
breakdown of the pair dataflow into sort, search, gather, GEMM and scatter-add.
Useful GFLOP/s = 2 x real pairs x C_in x C_out / time.

The pair-dataflow convs run twice: pure JAX (the columns "median ms" .., the reference) and with
the native CPU kernel of leakjax.sparse.native (the "native" columns; built on first use; "n/a"
where it cannot be built), and the native outputs and gradients are checked against pure JAX.

With --peer, the 0.05 m voxels and weights are exported in the peer tool's .npz format, the peer
runs interleaved with our timings (rounds), and its outputs are checked against ours (relative
error <= 1e-5). Without it, only our figures are printed. The scan comes from `datasets.synthetic`
when importable, otherwise from a small built-in ray caster (the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

THREADS = 2  # the setting; --threads 1 gives the per-core comparison
C = 64
TARGET_POINTS = 120_000


def set_threads(threads: int) -> list[int]:
    """Pin this process (and the peer it starts) to `threads` cores and tell XLA; before jax."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    return cores


def builtin_scan(seed: int = 0, azimuth_steps: int = 2083) -> np.ndarray:
    """HDL-64E geometry (64 beams, +2 to -24.9 deg, 1.73 m high) ray-cast onto a ground plane,
    boxes (cars, buildings) and vertical cylinders (poles). float32 [P, 3] metres."""
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(
        np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.9, 32)])
    )
    azimuth = (np.arange(azimuth_steps) + 0.5) * 2 * np.pi / azimuth_steps
    cos_e = np.cos(elevation)[:, None]
    rays = np.stack(
        [
            cos_e * np.cos(azimuth),
            cos_e * np.sin(azimuth),
            np.sin(elevation)[:, None] * np.ones_like(azimuth),
        ],
        -1,
    ).reshape(-1, 3)
    height = 1.73
    dist = np.full(len(rays), np.inf)
    down = rays[:, 2] < 0
    dist[down] = height / -rays[down, 2]
    boxes = []
    for _ in range(40):  # cars
        c = rng.uniform(-40, 40, 2)
        if np.hypot(*c) > 4:
            boxes.append(
                ((c[0] - 2.2, c[1] - 0.9, -height), (c[0] + 2.2, c[1] + 0.9, -height + 1.5))
            )
    for _ in range(14):  # buildings
        angle, r = rng.uniform(0, 2 * np.pi), rng.uniform(25, 45)
        c = r * np.array([np.cos(angle), np.sin(angle)])
        top = -height + rng.uniform(4, 12)
        boxes.append(((c[0] - 6, c[1] - 6, -height), (c[0] + 6, c[1] + 6, top)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo, hi in boxes:
            t1, t2 = np.asarray(lo) / rays, np.asarray(hi) / rays
            t_near = np.nanmax(np.minimum(t1, t2), 1)
            t_far = np.nanmin(np.maximum(t1, t2), 1)
            hit = (t_far >= t_near) & (t_near > 0) & (t_near < dist)
            dist = np.where(hit, t_near, dist)
        for _ in range(60):  # poles and trunks
            c, radius = rng.uniform(-35, 35, 2), rng.uniform(0.1, 0.4)
            top = rng.uniform(2, 8) - height
            a = rays[:, 0] ** 2 + rays[:, 1] ** 2
            b = -2 * (rays[:, 0] * c[0] + rays[:, 1] * c[1])
            disc = b * b - 4 * a * (c @ c - radius**2)
            t = (-b - np.sqrt(disc)) / (2 * a)
            z = t * rays[:, 2]
            hit = (disc > 0) & (t > 0) & (z < top) & (z > -height) & (t < dist)
            dist = np.where(hit, t, dist)
    keep = np.isfinite(dist) & (dist < 80) & (dist > 2.5) & (rng.random(len(dist)) > 0.03)
    points = rays[keep] * dist[keep, None] + rng.normal(0, 0.01, (int(keep.sum()), 3))
    return points.astype(np.float32)


def load_scan() -> tuple[np.ndarray, str]:
    """About TARGET_POINTS points of one scan, and where they came from."""
    try:
        from datasets.synthetic import SensorConfig, StreetWorld, render_scan

        world = StreetWorld(0, 0)
        probe = render_scan(world, SensorConfig(), 0, 0).points.shape[0]
        steps = int(round(2048 * TARGET_POINTS / probe))
        points = render_scan(world, SensorConfig(azimuth_steps=steps), 0, 0).points[:, :3]
        return points, f"datasets.synthetic StreetWorld(0, 0) scan 0, azimuth_steps={steps}"
    except Exception as error:  # the synthetic world is optional here
        print(f"datasets.synthetic unavailable ({error!r}); using the built-in ray caster")
        steps = 2083
        return builtin_scan(0, steps), f"built-in HDL-64E ray caster, azimuth_steps={steps}"


def with_native(fn, on: bool):
    """fn traced (on its first call) with the native pair_conv kernel on or off (LEAKJAX_NATIVE
    is read at trace time; later calls reuse the trace). fn must not be wrapped twice: jit shares
    the traces of one function."""

    def call(*args):
        old = os.environ.get("LEAKJAX_NATIVE")
        os.environ["LEAKJAX_NATIVE"] = "1" if on else "0"
        try:
            return fn(*args)
        finally:
            if old is None:
                del os.environ["LEAKJAX_NATIVE"]
            else:
                os.environ["LEAKJAX_NATIVE"] = old

    return call


NATIVE_OPS = ("subm_fwd", "subm_fwd_bwd", "subm_bwd_only", "down_fwd_64_128", "down_fwd_64_64")


def timed(fn, args, reps: int) -> list[float]:
    import jax

    jax.block_until_ready(fn(*args))  # warm-up (compiles)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


class Level:
    """One voxelised scan with everything the timings need (jitted functions built once)."""

    def __init__(self, points: np.ndarray, voxel_m: float, seed: int = 0):
        import jax
        import jax.numpy as jnp

        from leakjax import sparse as sp

        lower = np.floor(points.min(0) / voxel_m) * voxel_m - voxel_m
        shape = tuple(int(s) for s in np.ceil((points.max(0) - lower) / voxel_m) + 2)
        grid = sp.VoxelGrid(tuple(lower), tuple(lower + np.asarray(shape) * voxel_m), shape)
        point_batch, point_mask = jnp.asarray(points)[None], jnp.ones((1, len(points)), bool)
        exact = int(sp.voxelize(point_batch, point_mask, grid, len(points)).num_voxels[0])
        capacity = -(-exact // 4096) * 4096  # a bucket, as a data pipeline would pick
        vox = sp.voxelize(point_batch, point_mask, grid, capacity)
        assert not bool(vox.overflow[0]) and int(vox.num_voxels[0]) == exact
        rng = np.random.default_rng(seed)
        feats = (
            rng.normal(size=(1, capacity, C)).astype(np.float32) * np.asarray(vox.mask)[..., None]
        )
        self.voxel_m, self.num_voxels, self.capacity, self.grid = voxel_m, exact, capacity, grid
        self.x = sp.SparseTensor(vox.coords, jnp.asarray(feats), vox.mask, shape)
        self.weight = jnp.asarray(rng.normal(0, 0.05, (3, 3, 3, C, C)).astype(np.float32))
        self.weight_down = jnp.asarray(rng.normal(0, 0.05, (3, 3, 3, C, 2 * C)).astype(np.float32))
        grad = (
            rng.normal(size=(1, capacity, C)).astype(np.float32) * np.asarray(vox.mask)[..., None]
        )
        self.grad = jnp.asarray(grad)

        full = sp.submanifold_map(self.x)
        self.real_pairs = int(full.num_real_pairs()[0])  # centre included
        nonzero = self.real_pairs - exact
        self.pair_capacity = -(-int(nonzero * 1.05) // 1024) * 1024  # bucket with 5 % headroom
        mask = self.x.mask

        def kmap(x):
            return sp.submanifold_map(x, pair_capacity=self.pair_capacity)

        self.kmap_pairs = jax.jit(lambda x: kmap(x).pairs)
        self.kmap_tables = jax.jit(lambda x: kmap(x).neighbours)
        self.kmap = jax.jit(kmap)(self.x)
        assert not bool(self.kmap.overflow[0])

        def conv(f, w, km, method="pairs"):
            return sp.sparse_conv(f, km, w, in_mask=mask, method=method)

        from leakjax.sparse import native

        self.native = native.load()
        self.fwd = with_native(jax.jit(lambda *a: conv(*a)), False)
        self.fwd_native = with_native(jax.jit(conv), True)
        self.fwd_gather = jax.jit(lambda f, w, km: conv(f, w, km, "gather"))

        def fwd_bwd(f, w, km, g):
            # The output is returned, so the forward runs as in training (and as in spconv's
            # timing); a gradient alone lets XLA drop the forward, which is `bwd` below.
            out, pullback = jax.vjp(lambda f, w: conv(f, w, km), f, w)
            return out, pullback(g)

        self.fwd_bwd = with_native(jax.jit(lambda *a: fwd_bwd(*a)), False)
        self.fwd_bwd_native = with_native(jax.jit(fwd_bwd), True)
        bwd = jax.grad(lambda f, w, km, g: jnp.vdot(conv(f, w, km), g), argnums=(0, 1))
        self.bwd = with_native(jax.jit(lambda *a: bwd(*a)), False)
        self.bwd_native = with_native(jax.jit(bwd), True)

        def coarse_counts(x):  # one-off, to pick the static capacities like a pipeline would
            coarse, dmap, _ = sp.downsample_map(x, (3, 3, 3), (2, 2, 2), 8 * capacity)
            return jnp.sum(coarse.mask), jnp.sum(dmap.neighbours >= 0)

        num_coarse, down_pairs = (int(v) for v in jax.jit(coarse_counts)(self.x))
        self.down_pairs, self.num_coarse = down_pairs, num_coarse
        down_capacity = -(-num_coarse // 4096) * 4096
        down_pair_capacity = -(-int(down_pairs * 1.05) // 1024) * 1024

        def down(x, feats, w):
            coarse, dmap, overflow = sp.downsample_map(
                x, (3, 3, 3), (2, 2, 2), down_capacity, pair_capacity=down_pair_capacity
            )
            out = sp.sparse_conv(feats, dmap, w, out_mask=coarse.mask)
            return out, overflow | dmap.overflow

        self.down = with_native(jax.jit(lambda *a: down(*a)), False)
        self.down_native = with_native(jax.jit(down), True)
        assert not bool(self.down(self.x, self.x.feats, self.weight_down)[1][0])
        self.gemm = jax.jit(lambda a, b: a @ b)
        self.gemm_lhs = jnp.asarray(rng.normal(size=(exact, C)).astype(np.float32))

    def measure(self, reps: int) -> dict[str, list[float]]:
        x, f, w, km = self.x, self.x.feats, self.weight, self.kmap
        native = {}
        if self.native:
            native = {
                "subm_fwd_native": timed(self.fwd_native, (f, w, km), reps),
                "subm_fwd_bwd_native": timed(self.fwd_bwd_native, (f, w, km, self.grad), reps),
                "subm_bwd_only_native": timed(self.bwd_native, (f, w, km, self.grad), reps),
                "down_fwd_64_128_native": timed(self.down_native, (x, f, self.weight_down), reps),
                "down_fwd_64_64_native": timed(self.down_native, (x, f, w), reps),
            }
        return native | {
            "kmap_subm": timed(self.kmap_pairs, (x,), reps),
            "kmap_subm_full_tables": timed(self.kmap_tables, (x,), reps),
            "subm_fwd": timed(self.fwd, (f, w, km), reps),
            "subm_fwd_gather_reference": timed(self.fwd_gather, (f, w, km), reps),
            "subm_fwd_bwd": timed(self.fwd_bwd, (f, w, km, self.grad), reps),
            "subm_bwd_only": timed(self.bwd, (f, w, km, self.grad), reps),
            "down_fwd_64_128": timed(self.down, (x, f, self.weight_down), reps),
            "down_fwd_64_64": timed(self.down, (x, f, w), reps),
            "gemm_n64_64x64": timed(self.gemm, (self.gemm_lhs, w[0, 0, 0]), reps),
        }

    def outputs(self, native: bool = False):
        fwd, fwd_bwd = (
            (self.fwd_native, self.fwd_bwd_native) if native else (self.fwd, self.fwd_bwd)
        )
        out = fwd(self.x.feats, self.weight, self.kmap)
        _, (d_feats, d_weight) = fwd_bwd(self.x.feats, self.weight, self.kmap, self.grad)
        n = self.num_voxels
        return (
            np.asarray(out[0, :n]),
            np.asarray(d_feats[0, :n]),
            np.asarray(d_weight).reshape(27, C, C),
        )


def base_flops(level: Level) -> dict[str, int]:
    """Useful flops of the pair-dataflow ops."""
    return {
        "subm_fwd": 2 * level.real_pairs * C * C,
        "subm_fwd_bwd": 3 * 2 * level.real_pairs * C * C,  # fwd + grad_in + grad_w
        "subm_bwd_only": 2 * 2 * level.real_pairs * C * C,  # grad_in + grad_w
        "down_fwd_64_128": 2 * level.down_pairs * C * 2 * C,
        "down_fwd_64_64": 2 * level.down_pairs * C * C,
    }


def breakdown(level: Level, reps: int) -> dict[str, float]:
    """Median seconds of the pieces of the 0.05 m SubMConv3d, each timed on its own.

    Forward: map (sort, search), tile walk (gather, GEMM, scatter-add; both directions of the
    mirrored list) and the centre GEMM. Backward: the input gradient is the same walk with the
    transposed weights (tiles_gather_gemm_scatter again); the weight gradient adds per tile two
    gathers and one GEMM contracting over the tile's rows, and the centre tap's weight gradient
    contracts over all rows."""
    import jax
    import jax.numpy as jnp

    from leakjax.layers import rows
    from leakjax.sparse import search

    x = level.x
    pairs = jax.tree.map(lambda a: a[0], level.kmap.pairs[(3, 3, 3)])
    feats = x.feats[0]
    weight = level.weight.reshape(27, C, C)[13]
    tile = pairs.tile_size
    steps = int(pairs.num_tiles)

    def walk(piece):
        def body(i, acc):
            src = jax.lax.dynamic_slice_in_dim(pairs.in_rows, i * tile, tile)
            dst = jax.lax.dynamic_slice_in_dim(pairs.out_rows, i * tile, tile)
            if piece == "gemm":  # contiguous rows that change with i (no gather, not hoistable)
                rows = jax.lax.dynamic_slice_in_dim(feats, (i % 16) * tile, tile)
            else:
                rows = feats.at[src].get(mode="fill", fill_value=0)
            prod = rows @ weight if piece != "gather" else rows
            if piece == "scatter":  # rows that change with i, added at the real output rows
                return acc.at[dst].add(
                    jax.lax.dynamic_slice_in_dim(feats, (i % 16) * tile, tile), mode="drop"
                )
            return acc.at[:tile].add(prod) if piece != "all" else acc.at[dst].add(prod, mode="drop")

        # both directions of the mirrored list, as the conv does
        return jax.lax.fori_loop(0, 2 * steps, body, jnp.zeros_like(feats))

    grad = level.grad[0]

    def weight_grad_walk():
        def body(i, acc):
            j = i % steps  # both directions: rows swap roles in the second half
            a = jax.lax.dynamic_slice_in_dim(pairs.in_rows, j * tile, tile)
            b = jax.lax.dynamic_slice_in_dim(pairs.out_rows, j * tile, tile)
            a, b = jnp.where(i < steps, a, b), jnp.where(i < steps, b, a)
            rows_f = feats.at[a].get(mode="fill", fill_value=0)
            rows_g = grad.at[b].get(mode="fill", fill_value=0)
            return acc + rows_f.T @ rows_g

        return jax.lax.fori_loop(0, 2 * steps, body, jnp.zeros((C, C)))

    def sort_keys(coords, mask):
        return search.build_index(coords, mask, x.spatial_shape).keys

    def column_search(coords, mask):
        index = search.build_index(coords, mask, x.spatial_shape)
        columns = np.array([(0, 1), (1, -1), (1, 0), (1, 1)])
        return search.column_lookup(index, coords, mask, columns, (-1, 0, 1))

    pieces = {
        "sort_keys": (jax.jit(sort_keys), (x.coords[0], x.mask[0])),
        "sort_and_search_half_map": (jax.jit(column_search), (x.coords[0], x.mask[0])),
        "tiles_gather_only": (jax.jit(lambda: walk("gather")), ()),
        "tiles_gemm_only": (jax.jit(lambda: walk("gemm")), ()),
        "tiles_scatter_add_only": (jax.jit(lambda: walk("scatter")), ()),
        "tiles_gather_gemm_scatter": (jax.jit(lambda: walk("all")), ()),
        "centre_gemm": (jax.jit(lambda f: f @ weight), (feats,)),
        "bwd_tiles_weight_grad_only": (jax.jit(weight_grad_walk), ()),
        "bwd_centre_weight_grad": (
            jax.jit(rows.row_gram),
            (x.feats, level.grad, x.mask),
        ),
    }
    return {name: statistics.median(timed(fn, args, reps)) for name, (fn, args) in pieces.items()}


def run_peer(peer: str, npz: str, workdir: str, reps: int, round_index: int, threads: int) -> dict:
    json_path = os.path.join(workdir, f"peer_{round_index}.json")
    outputs = os.path.join(workdir, "peer_outputs.npz")
    cmd = [
        sys.executable,
        peer,
        npz,
        "--threads",
        str(threads),
        "--reps",
        str(reps),
        "--json",
        json_path,
        "--outputs",
        outputs,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(json_path) as f:
        return json.load(f)


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", help="path to spconv_peer.py (optional)")
    parser.add_argument("--out", default="bench_results/sparse_conv.json")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved ours/peer rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="CPU cores for both (the targets are at 2; 1 compares the dataflows per core)",
    )
    args = parser.parse_args(argv)
    if args.reps < 7:
        raise ValueError(f"--reps must be >= 7, got {args.reps}")
    cores = set_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    points, scan_source = load_scan()
    print(f"scan: {len(points)} points from {scan_source}; cores {cores}")
    levels = {v: Level(points, v) for v in (0.05, 0.1)}
    samples = {v: {} for v in levels}
    peer_rounds = []
    workdir = tempfile.mkdtemp(prefix="bench_sparse_")
    npz = os.path.join(workdir, "peer_input.npz")
    fine = levels[0.05]
    if args.peer:
        n = fine.num_voxels
        np.savez(
            npz,
            coords=np.asarray(fine.x.coords[0, :n]),
            feats=np.asarray(fine.x.feats[0, :n]),
            weight=np.asarray(fine.weight).reshape(27, C, C),
            grad=np.asarray(fine.grad[0, :n]),
        )
    for round_index in range(args.rounds):
        for voxel_m, level in levels.items():
            for name, times in level.measure(args.reps).items():
                samples[voxel_m].setdefault(name, []).extend(times)
        if args.peer:
            peer_rounds.append(
                run_peer(args.peer, npz, workdir, args.reps, round_index, args.threads)
            )
    pieces = breakdown(fine, args.reps)

    results = {
        "scan_source": scan_source,
        "points": int(len(points)),
        "threads": args.threads,
        "cores": cores,
        "reps_per_round": args.reps,
        "rounds": args.rounds,
        "jax": jax.__version__,
        "machine": platform.processor() or platform.machine(),
        "levels": {},
        "breakdown_0.05m_s": pieces,
    }
    header = (
        f"{'voxel':>6} {'op':<28} {'median ms':>10} {'useful GF/s':>12} {'vs GEMM':>8}"
        f" {'native ms':>10} {'native GF/s':>12} {'vs GEMM':>8} {'speed-up':>9}"
    )
    print(header)
    for voxel_m, level in levels.items():
        med = {name: statistics.median(t) for name, t in samples[voxel_m].items()}
        gemm_gflops = 2 * level.num_voxels * C * C / med["gemm_n64_64x64"] / 1e9
        flops = {
            **{f"{op}_native": flops for op, flops in base_flops(level).items()},
            **base_flops(level),
            "subm_fwd_gather_reference": 2 * level.real_pairs * C * C,
            "gemm_n64_64x64": 2 * level.num_voxels * C * C,
        }
        entry = {
            "voxels": level.num_voxels,
            "coarse_voxels_stride2": level.num_coarse,
            "capacity": level.capacity,
            "real_pairs_incl_centre": level.real_pairs,
            "real_pair_fraction_of_27": level.real_pairs / (27 * level.num_voxels),
            "down_real_pairs": level.down_pairs,
            "pair_capacity": level.pair_capacity,
            "gemm_gflops": gemm_gflops,
            "ops": {},
        }
        for name, seconds in med.items():
            gflops = flops[name] / seconds / 1e9 if name in flops else None
            entry["ops"][name] = {
                "median_s": seconds,
                "min_s": min(samples[voxel_m][name]),
                "max_s": max(samples[voxel_m][name]),
                "n": len(samples[voxel_m][name]),
                "useful_gflops": gflops,
                "fraction_of_gemm": gflops / gemm_gflops if gflops else None,
            }
            if name.endswith("_native"):
                continue  # printed in the native columns of its pure-JAX op
            gf = f"{gflops:12.1f} {gflops / gemm_gflops:8.2f}" if gflops else f"{'':12} {'':8}"
            line = f"{voxel_m:6.2f} {name:<28} {seconds * 1e3:10.2f} {gf}"
            if name in NATIVE_OPS:
                native_s = med.get(f"{name}_native")
                if native_s is None:
                    line += f" {'n/a':>10}"
                else:
                    native_gf = flops[name] / native_s / 1e9
                    line += (
                        f" {native_s * 1e3:10.2f} {native_gf:12.1f} {native_gf / gemm_gflops:8.2f}"
                        f" {seconds / native_s:8.2f}x"
                    )
            print(line)
        results["levels"][f"{voxel_m}m"] = entry
    print(
        "breakdown of the 0.05 m SubMConv3d (ms):",
        ", ".join(f"{k} {v * 1e3:.1f}" for k, v in pieces.items()),
    )

    if fine.native:
        errors = {
            name: rel_err(n, p)
            for name, n, p in zip(
                ("out", "d_feats", "d_weight"), fine.outputs(True), fine.outputs()
            )
        }
        results["native_vs_pure_jax_relative_error"] = errors
        print(
            "native vs pure JAX (max rel err, 0.05 m): "
            + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
            + f" -> {'OK' if all(e <= 1e-5 for e in errors.values()) else 'FAIL'}"
        )
    else:
        print("native kernel unavailable: native columns n/a (see the log line above)")

    if args.peer:
        ours_out, ours_dfeats, ours_dweight = fine.outputs()
        theirs = np.load(os.path.join(workdir, "peer_outputs.npz"))
        errors = {
            "out": rel_err(ours_out, theirs["out"]),
            "d_feats": rel_err(ours_dfeats, theirs["d_feats"]),
            "d_weight": rel_err(ours_dweight, theirs["d_weight"]),
        }
        agree = all(e <= 1e-5 for e in errors.values())
        peer_med = {
            k: statistics.median(r[k]["median_s"] for r in peer_rounds)
            for k in ("kmap_subm", "subm_fwd", "subm_fwd_bwd", "down_fwd")
        }
        ours = results["levels"]["0.05m"]["ops"]
        pairs_of = {
            "kmap_subm": "kmap_subm",
            "subm_fwd": "subm_fwd",
            "subm_fwd_bwd": "subm_fwd_bwd",
            "down_fwd": "down_fwd_64_64",
        }
        ratios = {k: ours[pairs_of[k]]["median_s"] / v for k, v in peer_med.items()}
        native_ratios = {
            k: ours[f"{pairs_of[k]}_native"]["median_s"] / v
            for k, v in peer_med.items()
            if f"{pairs_of[k]}_native" in ours
        }
        results["peer"] = {
            "rounds": peer_rounds,
            "median_s": peer_med,
            "ratio_ours_over_peer": ratios,
            "ratio_native_over_peer": native_ratios,
            "relative_error": errors,
            "agree_1e-5": agree,
            "peer_version": peer_rounds[0].get("peer"),
        }
        print(
            f"peer {peer_rounds[0].get('peer')} agreement (max rel err): "
            + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
            + f" -> {'OK' if agree else 'FAIL'}"
        )
        print(
            f"{'op (0.05 m)':<16} {'ours ms':>9} {'spconv ms':>10} {'ratio':>7}"
            f" {'native ms':>10} {'ratio':>7}"
        )
        for k, v in peer_med.items():
            ours_ms = ours[pairs_of[k]]["median_s"] * 1e3
            line = f"{k:<16} {ours_ms:9.2f} {v * 1e3:10.2f} {ratios[k]:7.2f}"
            if k in native_ratios:
                native_ms = ours[f"{pairs_of[k]}_native"]["median_s"] * 1e3
                line += f" {native_ms:10.2f} {native_ratios[k]:7.2f}"
            print(line)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
