"""The helpers of experiments/bench_randla.py and bench_range.py compute what they claim."""

import pytest

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
