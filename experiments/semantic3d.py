"""LEAK with RandLA-Net on Semantic3D: `python -m experiments.semantic3d [--workdir DIR] ...`.

The same four phases as experiments/semkitti.py (leakjax/pipeline/phases.py) on Semantic3D's
released split: train on 13 labelled scans, validate on bildstein_station3 and sg27_station2,
every labelled raw point of the validation scans scored (whole scans by default; the released
test-time crops with averaged votes with --config.data.scene.evaluation=possibility_votes, the
`:full` recipe's choice: datasets/scenes/voting.py), label 0 (unlabelled) ignored. Without
--data_dir the synthetic scans (datasets/semantic3d/synthetic.py) are generated once into
<workdir>/../synthetic_cache; with it, the directory of the benchmark's `<name>.txt` /
`<name>.labels` files, streamed with bounded memory. Configs: experiments/configs/semantic3d.py
(`:smoke`, `:full` = the released recipe).

Test predictions in the benchmark's submission format (one `.labels` line per raw point of each
test scan, ids 1..8, named as the benchmark expects), from a finished run of the work directory:

    python -m experiments.semantic3d --workdir workdirs/semantic3d --write_test submission/ \
        [--test_split reduced-8|semantic-8] [--test_run leak|baseline] [--data_dir DIR]

Each test scan is pre-processed like the others, predicted whole (or by its votes, as the run's
config.data.scene.evaluation says), and every raw point gets the prediction of its nearest
sub-sampled point (the released `proj`). On the synthetic stand-in the
written files are also scored against its hidden ground truth (printed).
"""

import json
import pathlib

import numpy as np
from absl import flags

from datasets.scenes import evaluation_source
from datasets.semantic3d import io, layout
from datasets.semantic3d import source as semantic3d_source
from datasets.semantic3d.labels import LABEL_SPACE
from experiments import pipeline_cli
from experiments.configs.base import restore_config
from leakjax.data import Dataset
from leakjax.leak import Hierarchy
from leakjax.pipeline import phases, renders
from leakjax.train import trainer, votes
from leakjax.train.mesh import make_data_mesh


def write_test_predictions(
    workdir,
    out_dir,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    split: str = "reduced-8",
    run: str = "leak",
) -> dict[str, float | None]:
    """Writes `<out_dir>/<submission name>` for every scan of a test split; returns {scan: overall
    accuracy against the synthetic stand-in's ground truth, or None on real data}."""
    workdir, out_dir = pathlib.Path(workdir).absolute(), pathlib.Path(out_dir)
    config = restore_config(json.loads((workdir / "config.json").read_text()))
    if config.data.name != "semantic3d":
        raise ValueError(f"{workdir}: not a Semantic3D run (data.name {config.data.name!r})")
    if run == "baseline":
        settings = phases.baseline_settings(config, LABEL_SPACE.num_micro)
    else:
        settings = phases.leak_settings(config, Hierarchy.load(workdir / "hierarchy.json"))
    cache_root = pathlib.Path(cache_dir) if cache_dir else workdir.parent / "synthetic_cache"
    root, where = semantic3d_source.data_root(config.data, data_dir, cache_root)
    clouds = semantic3d_source.split_clouds(config.data, root, split, cache_root)
    test = evaluation_source(clouds, LABEL_SPACE, config.data.scene)
    data = Dataset("semantic3d", LABEL_SPACE, semantic3d_source.SPEC, test, test, where, test=test)
    mesh = make_data_mesh()
    model, state, _ = trainer.load_state(config, workdir / run, mesh, data, settings)
    predict_ignored = bool(config.eval.predict_ignored)
    if votes.is_voted(test):  # the released test: every scan's votes over its crops
        cloud_votes = votes.vote(
            model,
            state.variables(),
            test,
            data.spec,
            mesh,
            LABEL_SPACE,
            config.eval.batch_size,
            list(config.data.buckets),
            predict_ignored,
        )
        predictions = votes.voted_predictions(cloud_votes, LABEL_SPACE, predict_ignored)
    accuracy = {}
    for index, cloud in enumerate(clouds):
        if votes.is_voted(test):
            prediction = predictions[index]
        else:
            [(_, _, prediction)] = renders.predict_points(
                model, state, data, mesh, config, [index], split="test"
            )
        raw = prediction[np.asarray(cloud.proj())]
        io.write_predictions(out_dir / layout.submission_file_name(cloud.name), raw)
        truth_path = root / "test_ground_truth" / f"{cloud.name}.labels"
        accuracy[cloud.name] = None
        if not data_dir and truth_path.exists():
            truth = io.load_labels(truth_path)
            labelled = truth != LABEL_SPACE.ignore_index
            accuracy[cloud.name] = float(np.mean(raw[labelled] == truth[labelled]))
        print(f"{cloud.name}: {len(raw)} points -> {layout.submission_file_name(cloud.name)}")
    if any(value is not None for value in accuracy.values()):
        print(f"synthetic ground truth, overall accuracy per scan: {accuracy}")
    return accuracy


if __name__ == "__main__":
    write_test = flags.DEFINE_string(
        "write_test", None, "Write test predictions (submission format) of --workdir's run here."
    )
    test_split = flags.DEFINE_enum(
        "test_split", "reduced-8", ["reduced-8", "semantic-8"], "Test set for --write_test."
    )
    test_run = flags.DEFINE_string("test_run", "leak", "Run of --workdir for --write_test.")

    def instead(workdir: str) -> bool:
        if not write_test.value:
            return False
        write_test_predictions(
            workdir,
            write_test.value,
            flags.FLAGS.data_dir,
            flags.FLAGS.cache_dir,
            test_split.value,
            test_run.value,
        )
        return True

    pipeline_cli.run(
        "experiments/configs/semantic3d.py",
        "workdirs/semantic3d",
        "Directory of the benchmark's <name>.txt / <name>.labels; default: the synthetic scans.",
        instead=instead,
    )
