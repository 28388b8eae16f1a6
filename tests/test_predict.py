"""`python -m experiments.predict`: a tiny trained run predicts files of every supported format.

Every format is written here with known points (by its own package or by hand, not by the reader
under test); the written `.label`, `.ply` and `.png` are read back and compared with the model's
predictions computed here independently: the checkpoint's raw parameters, `model.apply` on the
padded points and `LabelSpace.predict`.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import laspy
import matplotlib.image
import numpy as np
import plyfile
import pytest

from datasets import semantic_kitti
from datasets.pointcloud_files import lzf_decompress, read_point_cloud
from datasets.semantic_kitti.labels import LABEL_SPACE, LEARNING_MAP_INV
from experiments import predict as predict_cli
from experiments.configs import semkitti as semkitti_configs
from leakjax.leak import given_grouping
from leakjax.models import MODELS
from leakjax.models.pointmlp import PointMLP
from leakjax.models.randla_net import shuffle_valid_points
from leakjax.pipeline import phases
from leakjax.train.checkpoint import Checkpointer

REPO = pathlib.Path(__file__).resolve().parent.parent
HIDDEN = (16, 16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-step PointMLP baseline and LEAK run on the smoke synthetic world; a scan of it."""
    root = tmp_path_factory.mktemp("predict")
    config = semkitti_configs.get_config("smoke")
    config.model.name = "pointmlp"
    config.model.kwargs = {"hidden_sizes": HIDDEN}
    config.optimizer.learning_rate = 3e-2
    config.train.num_steps = 3
    config.train.eval_every = 0
    # Bookkeeping: no Lovasz-softmax. Over the global batch its sort cannot be partitioned, so on
    # the 4 simulated devices every device computes it whole (~2.5 s a step on 2 cores).
    config.loss.lovasz_weight = 0.0
    pipe = phases.setup(config, root / "work", cache_dir=str(root / "cache"))
    baseline = phases.train_baseline(pipe)
    names = LABEL_SPACE.micro_names
    hierarchy = given_grouping(np.arange(len(names)) % 3, class_names=names)
    leak = phases.train_leak(pipe, hierarchy, baseline)
    scan = pipe.data.validation[0]["points"]
    return {"baseline": baseline, "leak": leak, "scan": scan, "root": root}


def expected_labels(run_dir: pathlib.Path, points: np.ndarray) -> np.ndarray:
    """Training ids int32 [N] from the checkpoint's raw variables: PointMLP.apply on the finite
    points padded to 16384 and LabelSpace.predict; non-finite rows get the no-label id 0."""
    checkpointer = Checkpointer(run_dir / "checkpoints", async_save=False)
    raw = checkpointer.restore_raw()
    checkpointer.close()
    model = PointMLP(num_classes=20, ignore_index=0, hidden_sizes=HIDDEN)
    finite = np.isfinite(points).all(axis=1)
    count = int(finite.sum())
    capacity = 16384
    batch = {
        "points": np.zeros((1, capacity, 4), np.float32),
        "labels": np.zeros((1, capacity), np.int32),
        "point_mask": np.zeros((1, capacity), bool),
    }
    batch["points"][0, :count] = points[finite]
    batch["point_mask"][0, :count] = True
    variables = {"params": raw["params"], "batch_stats": raw["batch_stats"]}
    logits, _ = model.apply(variables, batch, train=False)
    labels = np.zeros(len(points), np.int32)
    labels[finite] = LABEL_SPACE.predict(np.asarray(logits))[0, :count]
    return labels


# --- writers of every format, independent of the reader under test --------------------------


def write_ply(path, xyz, remission=None, text=False, remission_type="f4"):
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if remission is not None:
        fields.append(("intensity", remission_type))
    vertex = np.empty(len(xyz), fields)
    for column, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, column]
    if remission is not None:
        vertex["intensity"] = remission
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=text).write(str(path))


def pcd_header(num_points, data):
    return (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\n"
        "SIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
        f"WIDTH {num_points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {num_points}\nDATA {data}\n"
    ).encode()


def lzf_compress(data: bytes) -> bytes:
    """A minimal LZF encoder: literal runs, and back-references to 4 bytes back (repeated
    float32 values), which overlap their own output when longer than 4."""
    out, literal, index = bytearray(), bytearray(), 0

    def flush():
        while literal:
            chunk = literal[:32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
            del literal[:32]

    while index < len(data):
        length = 0
        while (
            index >= 4
            and index + length < len(data)
            and length < 264
            and data[index + length] == data[index + length - 4]
        ):
            length += 1
        if length >= 3:
            flush()
            coded = length - 2
            if coded < 7:
                out.append(coded << 5)
            else:
                out.extend([7 << 5, coded - 7])
            out.append(3)  # offset 4 - 1
            index += length
            continue
        literal.append(data[index])
        index += 1
    flush()
    return bytes(out)


def write_pcd(path, points, data="binary"):
    points = points.astype("<f4")
    if data == "ascii":
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in points).encode()
    elif data == "binary":
        body = points.tobytes()
    else:
        field_major = np.ascontiguousarray(points.T).tobytes()
        compressed = lzf_compress(field_major)
        body = np.asarray([len(compressed), len(field_major)], "<u4").tobytes() + compressed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pcd_header(len(points), data) + body)


def write_las(path, xyz, intensity):
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.zeros(3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.intensity = intensity
    las.write(str(path))
    # what the file holds: integers x scale + offset, as float64
    return np.round(xyz / 0.001) * 0.001


def write_inputs(directory: pathlib.Path, scan: np.ndarray) -> dict[str, np.ndarray]:
    """One file per format, each from a different slice of `scan`; returns {relative stem:
    the float32 [N, 4] points the reader must return (remission as documented)}."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    parts = [scan[k * 400 : (k + 1) * 400].copy() for k in range(11)]
    expected = {}

    kitti = parts[0]
    kitti[[3, 77]] = [np.nan, 1.0, 1.0, 0.5]  # NaN coordinates: reported, labelled 0
    kitti[120, 2] = np.inf
    kitti.astype("<f4").tofile(directory / "kitti.bin")
    expected["kitti"] = kitti

    write_ply(directory / "binary.ply", parts[1][:, :3], parts[1][:, 3])
    expected["binary"] = parts[1]
    intensity8 = rng.integers(0, 256, len(parts[2])).astype(np.uint8)
    write_ply(directory / "ascii.ply", parts[2][:, :3], intensity8, text=True, remission_type="u1")
    expected["ascii"] = np.c_[parts[2][:, :3], intensity8 / 255.0].astype(np.float32)
    write_ply(directory / "no_remission.ply", parts[3][:, :3])
    expected["no_remission"] = np.c_[parts[3][:, :3], np.zeros(len(parts[3]))].astype(np.float32)

    write_pcd(directory / "ascii.pcd.d" / "cloud.pcd", parts[4], "ascii")
    expected["ascii.pcd.d/cloud"] = parts[4]
    write_pcd(directory / "binary_pcd.pcd", parts[5], "binary")
    expected["binary_pcd"] = parts[5]
    compressed = parts[6].copy()
    compressed[:, 3] = 0.25  # a constant column: long overlapping back-references
    write_pcd(directory / "compressed.pcd", compressed, "binary_compressed")
    expected["compressed"] = compressed

    intensity16 = rng.integers(0, 65536, len(parts[7])).astype(np.uint16)
    stored = write_las(directory / "tile.las", parts[7][:, :3].astype(np.float64), intensity16)
    expected["tile"] = np.c_[stored, intensity16 / 65535.0].astype(np.float32)
    stored = write_las(directory / "tile_laz.laz", parts[8][:, :3].astype(np.float64), intensity16)
    expected["tile_laz"] = np.c_[stored, intensity16 / 65535.0].astype(np.float32)

    np.save(directory / "xyz.npy", parts[9][:, :3].astype(np.float64))
    expected["xyz"] = np.c_[parts[9][:, :3], np.zeros(len(parts[9]))].astype(np.float32)
    # more points than the largest bucket (10240): an added bucket of 16384
    large = np.concatenate([scan, scan])[:12000] + np.float32([0.01, 0, 0, 0])
    np.save(directory / "large.npy", large)
    expected["large"] = large
    (directory / "notes.txt").write_text("not a scan: skipped")
    return expected


def test_every_format_is_predicted_and_written(runs, tmp_path):
    inputs = tmp_path / "inputs"
    expected_points = write_inputs(inputs, runs["scan"])
    output = tmp_path / "out"
    summary = predict_cli.predict(runs["baseline"], inputs, output, image_size=64)
    scans = {
        pathlib.Path(s["input"]).relative_to(inputs).with_suffix("").as_posix(): s
        for s in summary["scans"]
    }
    assert sorted(scans) == sorted(expected_points)
    all_labels = []
    for stem, points in expected_points.items():
        # the reader returns the points as written (NaN rows in place)
        read = read_point_cloud(next(p for p in inputs.glob(f"{stem}.*") if p.is_file()))
        np.testing.assert_array_equal(read.points, points)
        expected = expected_labels(runs["baseline"], points)
        all_labels.append(expected)
        raw, instance = semantic_kitti.load_labels(output / f"{stem}.label", len(points))
        np.testing.assert_array_equal(raw, LEARNING_MAP_INV[expected])
        assert not instance.any()
        vertex = plyfile.PlyData.read(str(output / f"{stem}.ply"))["vertex"].data
        np.testing.assert_array_equal(vertex["label"], expected)
        np.testing.assert_array_equal(
            np.stack([vertex[a] for a in ("x", "y", "z", "remission")], 1), points
        )
        colors = np.asarray(LABEL_SPACE.colors)[expected]
        np.testing.assert_array_equal(
            np.stack([vertex[c] for c in ("red", "green", "blue")], 1), colors
        )
        # bird's-eye picture (x up, y left, the square around the 1st-99th percentile box of x
        # and y): each pixel has the colour of its highest point's label, empty pixels white
        image = np.round(matplotlib.image.imread(output / f"{stem}.png")[..., :3] * 255)
        assert image.shape == (64, 64, 3)
        finite = np.isfinite(points).all(axis=1)
        xy, z, finite_colors = points[finite, :2], points[finite, 2], colors[finite]
        low, high = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
        centre, half = (low + high) / 2, max((high - low).max() / 2, 1e-3)
        x_max, y_max = centre + half
        row = np.floor((x_max - xy[:, 0]) / (2 * half) * 64).astype(int)
        col = np.floor((y_max - xy[:, 1]) / (2 * half) * 64).astype(int)
        row[xy[:, 0] == centre[0] - half] = 63
        col[xy[:, 1] == centre[1] - half] = 63
        inside = np.flatnonzero((col >= 0) & (col < 64) & (row >= 0) & (row < 64))
        expected_image = np.full((64, 64, 3), 255)
        # drawn lowest first, so the highest (on a tie, the first in the file) is drawn last
        for index in inside[np.lexsort((-inside, z[inside]))]:
            expected_image[row[index], col[index]] = finite_colors[index]
        np.testing.assert_array_equal(image, expected_image)
    # the model predicts several classes here, so the comparisons above are not trivial
    assert len(np.unique(np.concatenate(all_labels))) >= 2
    # non-finite points: reported with their indices, labelled 0 (raw "unlabeled")
    assert scans["kitti"]["nonfinite_indices"] == [3, 77, 120]
    assert all(s["nonfinite_points"] == 0 for k, s in scans.items() if k != "kitti")
    assert scans["no_remission"]["remission"] == "filled 0.0"
    assert json.loads((output / "predictions.json").read_text()) == summary


def test_leak_run_and_command_line(runs, tmp_path):
    """A LEAK run (its prototype bank restored with its hierarchy) through the command line."""
    points = runs["scan"][:500]
    points.astype("<f4").tofile(tmp_path / "000007.bin")
    output = tmp_path / "cli"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.predict",
            f"--run={runs['leak']}",
            f"--input={tmp_path / '000007.bin'}",
            f"--output={output}",
            "--format=label,ply",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = expected_labels(runs["leak"], points)
    raw, _ = semantic_kitti.load_labels(output / "000007.label", len(points))
    np.testing.assert_array_equal(semantic_kitti.LEARNING_MAP[raw], expected)
    assert sorted(p.name for p in output.iterdir()) == [
        "000007.label",
        "000007.ply",
        "predictions.json",
    ]


def test_kitti_test_split_in_the_benchmark_layout(runs, tmp_path):
    root = tmp_path / "kitti"
    scans = {}
    for k, sequence in enumerate(range(11, 22)):
        scan = runs["scan"][k * 37 : k * 37 + 30 + k]
        for index in range(2):
            path = root / "sequences" / f"{sequence}" / "velodyne" / f"{index:06d}.bin"
            semantic_kitti.write_scan(path, scan[index:])
            scans[(sequence, index)] = scan[index:]
    output = tmp_path / "submission"
    predict_cli.predict_kitti_test(runs["baseline"], root, output)
    for (sequence, index), points in scans.items():
        path = output / "sequences" / f"{sequence}" / "predictions" / f"{index:06d}.label"
        raw, _ = semantic_kitti.load_labels(path, len(points))
        np.testing.assert_array_equal(
            raw, LEARNING_MAP_INV[expected_labels(runs["baseline"], points)]
        )
    with zipfile.ZipFile(output / "submission.zip") as archive:
        names = set(archive.namelist())
    # what the benchmark's validate_submission.py checks: directory entries and one file per scan
    assert "sequences/" in names
    for sequence in range(11, 22):
        assert f"sequences/{sequence}/predictions/" in names
        for index in range(2):
            assert f"sequences/{sequence}/predictions/{index:06d}.label" in names


def test_lzf_round_trip_of_the_test_encoder():
    data = np.asarray([0.25] * 100 + list(range(50)), "<f4").tobytes()
    assert lzf_decompress(lzf_compress(data), len(data)) == data
    with pytest.raises(ValueError, match="expected 7"):
        lzf_decompress(lzf_compress(b"abcdefgh"), 7)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("short.bin", b"\0" * 10, "not a multiple of 16"),
        ("empty.bin", b"", "no points"),
        ("garbage.ply", b"this is not a ply file\n", "cannot read as ply"),
        ("nofields.pcd", b"VERSION 0.7\nWIDTH 1\nHEIGHT 1\nDATA ascii\n0 0 0\n", "no FIELDS"),
        ("short.pcd", pcd_header(3, "binary") + b"\0" * 20, "expected 3 points"),
        ("lines.pcd", pcd_header(2, "ascii") + b"1 2 3 4\n", "1 data lines"),
        ("garbage.las", b"LASF" + b"\0" * 50, "cannot read as las"),
        ("wide.npy", None, "expected [N, 3] or [N, 4]"),
        ("cloud.xyz", b"1 2 3\n", "unsupported point cloud suffix"),
    ],
)
def test_bad_files_are_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((5, 7)))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        read_point_cloud(path)
    assert str(path) in str(error.value)


def test_bad_file_in_a_directory_stops_prediction_naming_it(runs, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "good.npy", runs["scan"][:50])
    (inputs / "bad.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match="bad.bin"):
        predict_cli.predict(runs["baseline"], inputs, tmp_path / "out")
    with pytest.raises(ValueError, match="SemanticKITTI submission format|unknown"):
        predict_cli.predict(runs["baseline"], inputs, tmp_path / "out", formats=["jpg"])


def _predict_as(runs, tmp_path, monkeypatch, model_class, points) -> np.ndarray:
    """Raw .label ids predicted for `points` by the baseline's parameters under `model_class`
    (registered for the test, given through --workdir_config)."""
    name = model_class.__name__.lower()
    monkeypatch.setitem(MODELS, name, model_class)
    config = json.loads((runs["baseline"].parent / "config.json").read_text())
    config["model"]["name"] = name
    (tmp_path / "config.json").write_text(json.dumps(config))
    np.save(tmp_path / "scan.npy", points)
    predict_cli.predict(
        runs["baseline"],
        tmp_path / "scan.npy",
        tmp_path / "out",
        formats=["label"],
        workdir_config=str(tmp_path / "config.json"),
    )
    raw, _ = semantic_kitti.load_labels(tmp_path / "out" / "scan.label", len(points))
    return raw


class FlippedPointMLP(PointMLP):
    """PointMLP on the y-mirrored scan, which its host-side `prepare_batch` adds to the batch."""

    def prepare_batch(self, batch):
        return {**batch, "flipped": batch["points"] * np.float32([1, -1, 1, 1])}

    def __call__(self, batch, train=False):
        return super().__call__({**batch, "points": batch["flipped"]}, train)


def test_batches_go_through_the_models_prepare_batch(runs, tmp_path, monkeypatch):
    """The baseline's parameters under a model with a `prepare_batch` hook (the config given with
    --workdir_config): predictions are those of the mirrored points."""
    points = runs["scan"][:300]
    raw = _predict_as(runs, tmp_path, monkeypatch, FlippedPointMLP, points)
    mirrored = points * np.float32([1, -1, 1, 1])
    np.testing.assert_array_equal(
        raw, LEARNING_MAP_INV[expected_labels(runs["baseline"], mirrored)]
    )
    assert not np.array_equal(raw, LEARNING_MAP_INV[expected_labels(runs["baseline"], points)])


class ShuffledPointMLP(PointMLP):
    """PointMLP behind RandLA-Net's host-side shuffle of every scan's points."""

    def prepare_batch(self, batch):
        return shuffle_valid_points(batch)


def test_predictions_come_back_in_the_files_order(runs, tmp_path, monkeypatch):
    """A model whose prepare_batch permutes the points (RandLA-Net's shuffle): the written labels
    are still those of the file's points in the file's order (a per-point model predicts the
    same label for a point wherever it sits)."""
    points = runs["scan"][:300]
    raw = _predict_as(runs, tmp_path, monkeypatch, ShuffledPointMLP, points)
    expected = expected_labels(runs["baseline"], points)
    assert len(np.unique(expected)) > 1  # else any order would pass
    np.testing.assert_array_equal(raw, LEARNING_MAP_INV[expected])
