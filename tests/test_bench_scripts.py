"""The helpers of experiments/bench_randla.py, bench_range.py and bench_cylinder3d.py compute
what they claim."""

import numpy as np
import pytest

from experiments.bench_cylinder3d import (
    batch_digest,
    bench_setup,
    export_scans,
    make_batch,
    peer_command,
)
from experiments.bench_randla import brute_force_pairs, recommend
from experiments.bench_range import model_config, network_of


def test_brute_force_pairs_counts_knn_and_upsampling_distances():
    # Levels 64 -> 16: 64 x 64 (kNN) + 64 x 16 (nearest kept point).
    assert brute_force_pairs(64, (4,)) == 64 * 64 + 64 * 16
    sizes = (45056, 11264, 2816, 704, 176)
    expected = sum(n * n + n * m for n, m in zip(sizes[:-1], sizes[1:]))
    assert brute_force_pairs(45056) == expected


def test_recommend_adds_costs_on_cpu_and_overlaps_on_accelerators():
    cpu = recommend("cpu", train_cps=1.0, host_cps=4.0, device_cps=0.5)
    assert cpu["host_path_cps"] == pytest.approx(1 / (1 / 4 + 1))
    assert cpu["device_path_cps"] == pytest.approx(1 / 3)
    assert cpu["choice"] == "host" and cpu["input_over_consumption"] == 4.0
    # A fast device step outruns the host's input; a cheap device kNN then wins.
    gpu = recommend("gpu", train_cps=10.0, host_cps=4.0, device_cps=100.0)
    assert gpu["host_path_cps"] == 4.0
    assert gpu["device_path_cps"] == pytest.approx(1 / (0.01 + 0.1))
    assert gpu["choice"] == "device"
    # The input keeps up: overlapped host kNN is free.
    assert recommend("tpu", 10.0, 40.0, 100.0)["choice"] == "host"


@pytest.mark.parametrize("name", ["rangenet21", "rangenet53", "salsanext"])
def test_network_of_copies_the_models_fields(name):
    from datasets.semantic_kitti.labels import LABEL_SPACE
    from leakjax.train.trainer import build_model

    config = model_config(name, 1024)
    config.model.kwargs.dropout_rate = 0.3
    model = build_model(config, LABEL_SPACE)
    assert (model.width, model.use_knn) == (1024, True)
    network = network_of(model)
    assert network.dropout_rate == 0.3 and network.num_classes == model.num_classes
    if name != "salsanext":
        assert network.depth == model.depth == int(name[-2:])


def test_cylinder3d_peer_gets_our_scans_and_setting(tmp_path):
    from experiments.configs.semkitti import get_config
    from leakjax.models.cylinder3d import Cylinder3D

    setup = bench_setup("default")
    assert setup["model_kwargs"] == dict(get_config("default").model.kwargs)
    assert setup["seeds"] == (0, 1)
    rng = np.random.default_rng(0)
    scans = [
        (rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 20, n).astype(np.int32))
        for n in (5, 9)
    ]
    batch = make_batch(scans, setup["buckets"])
    assert batch["points"].shape == (2, 32768, 4)  # the config's smallest bucket
    digest = export_scans(batch, tmp_path / "scans.npz")
    with np.load(tmp_path / "scans.npz") as npz:
        assert sorted(npz.files) == ["labels_0", "labels_1", "points_0", "points_1"]
        for index, (points, labels) in enumerate(scans):  # real entries only, exact values
            assert npz[f"points_{index}"].dtype == np.float32
            assert npz[f"labels_{index}"].dtype == np.int32
            np.testing.assert_array_equal(npz[f"points_{index}"], points)
            np.testing.assert_array_equal(npz[f"labels_{index}"], labels)
    assert digest == batch_digest(make_batch(scans)) != batch_digest(make_batch(scans[:1]))

    def flag(command, name, count=1):
        index = command.index(name)
        return command[index + 1 : index + 1 + count]

    model = Cylinder3D(**setup["model_kwargs"])
    command = peer_command("peer.py", "scans.npz", "out.json", model, threads=2, reps=3)
    assert command[:3] == ["python3", "peer.py", "scans.npz"]
    assert flag(command, "--grid", 3) == ["120", "90", "16"]
    assert flag(command, "--init-size") == ["8"]
    assert flag(command, "--point-widths", 4) == ["16", "32", "64", "64"]
    runs = [flag(command, name) for name in ("--threads", "--reps", "--warmup")]
    assert runs == [["2"], ["3"], ["1"]]
    assert flag(command, "--ce-weights") == ["none"] and flag(command, "--json") == ["out.json"]
    released = Cylinder3D(**bench_setup("released", 16)["model_kwargs"])
    command = peer_command("peer.py", "scans.npz", "out.json", released, threads=2, reps=3)
    assert flag(command, "--grid", 3) == ["480", "360", "32"]
    assert flag(command, "--point-widths", 4) == ["64", "128", "256", "256"]
    assert flag(command, "--init-size") == ["16"]
