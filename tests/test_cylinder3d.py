"""Cylinder3D end to end on a tiny grid: shapes and masks, level sets vs. a brute-force spconv
down-sampling in numpy, the up path restoring each level's set, finite gradients, LEAK feature
labels vs. a brute-force majority vote, overfitting one scan, and the point refinement head.

One network configuration (grid 32 x 24 x 16, init_size 4, ~160 voxels per scan) is compiled
three times per module (init, eval forward, train step) through module-scoped fixtures, plus the
refinement variant twice (init, eval). The convs use the "gather" dataflow to keep compile time
down; the sparse core's tests check it against the pair-list dataflow.
"""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from datasets.semantic_kitti.labels import LABEL_SPACE, to_train_ids
from datasets.synthetic import SensorConfig, StreetWorld, render_scan
from leakjax.models import MODELS
from leakjax.models.cylinder3d import DOWN_STRIDES, Cylinder3D, cumulative_strides
from leakjax.train import mesh as mesh_lib
from leakjax.train.batch import point_cloud_spec
from leakjax.train.state import state_from_variables
from leakjax.train.steps import LossSettings, make_train_step

GRID_SHAPE = (32, 24, 16)
GRID_LOWER = (0.0, -math.pi, -4.0)  # the released bounds on a coarse grid
GRID_UPPER = (50.0, math.pi, 2.0)
NUM_CLASSES = 20
NUM_POINTS = 704
CAPACITIES = (192, 320, 144, 64, 24)  # ~160 / 250 / 115 / 48 / 16 voxels are active


def make_batch() -> dict[str, np.ndarray]:
    """Two small scans of the synthetic street world (12 azimuth steps of the 64-beam sensor),
    padded to NUM_POINTS; training ids via the official learning map."""
    points = np.zeros((2, NUM_POINTS, 4), np.float32)
    labels = np.zeros((2, NUM_POINTS), np.int32)
    mask = np.zeros((2, NUM_POINTS), bool)
    for b in range(2):
        scan = render_scan(StreetWorld(seed=0, sequence=b), SensorConfig(azimuth_steps=12), b, 0)
        count = len(scan.points)
        assert count <= NUM_POINTS
        points[b, :count], labels[b, :count] = scan.points, to_train_ids(scan.semantic)
        mask[b, :count] = True
    return {"points": points, "point_mask": mask, "labels": labels}


def numpy_cells(points: np.ndarray) -> np.ndarray:
    """Released clip-and-floor cell of each point, int64 [P, 3]."""
    rho = np.hypot(points[:, 0], points[:, 1])
    polar = np.stack([rho, np.arctan2(points[:, 1], points[:, 0]), points[:, 2]], 1)
    lower, upper = np.array(GRID_LOWER), np.array(GRID_UPPER)
    interval = (upper - lower) / (np.array(GRID_SHAPE) - 1)
    return np.floor((np.clip(polar, lower, upper) - lower) / interval).astype(np.int64)


def numpy_level_sets(cells0: np.ndarray) -> list[np.ndarray]:
    """Brute-force spconv SparseConv3d(kernel 3, padding 1) output sets, level by level."""
    sets, current, shape = [np.unique(cells0, axis=0)], np.unique(cells0, axis=0), GRID_SHAPE
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for stride in DOWN_STRIDES:
        stride = np.array(stride)
        shape = tuple(-(-n // s) for n, s in zip(shape, stride))
        out = set()
        for p in current:
            for o in offsets:
                diff = p - o
                if np.all(diff % stride == 0):
                    q = diff // stride
                    if np.all(q >= 0) and np.all(q < np.array(shape)):
                        out.add(tuple(q))
        current = np.array(sorted(out))
        sets.append(current)
    return sets


@pytest.fixture(scope="module")
def setup():
    model = Cylinder3D(
        num_classes=NUM_CLASSES,
        grid_shape=GRID_SHAPE,
        grid_lower=GRID_LOWER,
        grid_upper=GRID_UPPER,
        init_size=4,
        capacities=CAPACITIES,
        # The reference dataflow compiles ~3x faster than the pair lists on this tiny grid; the
        # sparse core's own tests check that both dataflows agree.
        conv_method="gather",
    )
    batch = make_batch()
    # An rbg key: threefry initialisers of ~100 parameter arrays dominate the init compile time.
    key = jax.random.key(0, impl="unsafe_rbg")
    variables = jax.jit(lambda b: model.init(key, b, train=False))(batch)

    @jax.jit
    def evaluate(variables, batch):
        (logits, aux), state = model.apply(variables, batch, train=False, mutable=["intermediates"])
        return logits, aux, state["intermediates"]

    # The trainer's own step (leakjax/train/steps.py): L0 = voxel CE + Lovasz, Adam.
    optimizer = optax.adam(1e-2)
    mesh = mesh_lib.make_data_mesh(jax.devices()[:1])
    loss_settings = LossSettings(lovasz_weight=1.0)
    spec = point_cloud_spec(4)
    train_step = make_train_step(
        model, optimizer, mesh, jax.random.key(0), loss_settings, LABEL_SPACE, spec, donate=False
    )

    return model, batch, variables, evaluate, optimizer, train_step


@pytest.fixture(scope="module")
def evaluated(setup):
    _, batch, variables, evaluate, _, _ = setup
    return evaluate(variables, batch)


def test_registered():
    assert MODELS["cylinder3d"] is Cylinder3D


def test_shapes_masks_and_point_logits(setup, evaluated):
    model, batch, _, _, _, _ = setup
    logits, aux, _ = evaluated
    # Levels 3 and 4 of this grid have only 48 and 16 cells: their buckets are capped there.
    assert model.level_capacities == (192, 320, 144, 48, 16)
    assert logits.shape == (2, NUM_POINTS, NUM_CLASSES) and logits.dtype == jnp.float32
    assert not np.asarray(aux["overflow"]).any()
    assert aux["loss_logits"].shape == (2, CAPACITIES[0], NUM_CLASSES)
    assert aux["features"].shape == (2, 16, 16 * 4)
    for key in ("feature_mask", "feature_labels", "loss_labels", "loss_mask"):
        assert aux[key].shape[0] == 2
    logits, loss_logits = np.asarray(logits), np.asarray(aux["loss_logits"])
    for b in range(2):
        real = batch["point_mask"][b]
        cells = numpy_cells(batch["points"][b][real])
        voxel_set, point_row = np.unique(cells, axis=0, return_inverse=True)
        point_row = point_row.reshape(-1)
        assert int(aux["loss_mask"][b].sum()) == len(voxel_set)
        np.testing.assert_array_equal(np.asarray(aux["feature_coords"][b]).shape[-1], 3)
        # Each point carries exactly its voxel's logits; padded points and voxels are zero.
        np.testing.assert_array_equal(logits[b][real], loss_logits[b][point_row])
        np.testing.assert_array_equal(logits[b][~real], 0.0)
        np.testing.assert_array_equal(loss_logits[b][len(voxel_set) :], 0.0)
        assert np.abs(loss_logits[b][: len(voxel_set)]).sum(axis=-1).min() > 0
        # Voxel loss labels: the released vote (every point label, unlabelled included).
        labels = batch["labels"][b][real]
        for row in range(len(voxel_set)):
            votes = collections.Counter(labels[point_row == row].tolist())
            top = max(votes.values())
            assert aux["loss_labels"][b, row] == min(c for c, k in votes.items() if k == top)


def test_level_sets_and_up_path_restore_them(setup, evaluated):
    _, batch, _, _, _, _ = setup
    _, aux, intermediates = evaluated
    for b in range(2):
        real = batch["point_mask"][b]
        expected = numpy_level_sets(numpy_cells(batch["points"][b][real]))
        for level, expected_set in enumerate(expected):
            enc_coords, enc_mask = intermediates[f"encoder_set_{level}"][0]
            enc_mask = np.asarray(enc_mask[b])
            np.testing.assert_array_equal(np.asarray(enc_coords[b])[enc_mask], expected_set)
            if level == len(expected) - 1:
                continue  # the bottleneck has no decoder output
            dec_coords, dec_mask, dec_feats = intermediates[f"decoder_{level}"][0]
            dec_mask = np.asarray(dec_mask[b])
            # The inverse convs restore exactly the encoder's set at every level.
            np.testing.assert_array_equal(dec_mask, enc_mask)
            np.testing.assert_array_equal(np.asarray(dec_coords[b])[dec_mask], expected_set)
            feats = np.asarray(dec_feats[b])
            np.testing.assert_array_equal(feats[~dec_mask], 0.0)
            assert np.abs(feats[dec_mask]).sum(axis=-1).min() > 0
        np.testing.assert_array_equal(
            np.asarray(aux["feature_coords"][b])[np.asarray(aux["feature_mask"][b])], expected[4]
        )


def test_feature_labels_match_brute_force_majority(setup, evaluated):
    _, batch, _, _, _, _ = setup
    _, aux, _ = evaluated
    stride = np.array(cumulative_strides()[4])
    for b in range(2):
        real = batch["point_mask"][b]
        cells = numpy_cells(batch["points"][b][real]) // stride
        labels = batch["labels"][b][real]
        votes = collections.defaultdict(collections.Counter)
        for cell, label in zip(map(tuple, cells), labels):
            if label != 0:
                votes[cell][label] += 1
        coords = np.asarray(aux["feature_coords"][b])
        mask = np.asarray(aux["feature_mask"][b])
        got = np.asarray(aux["feature_labels"][b])
        assert (got[~mask] == 0).all()
        num_labelled = 0
        for row in np.nonzero(mask)[0]:
            counter = votes.get(tuple(coords[row]))
            if not counter:
                assert got[row] == 0  # reached only by the dilation of spconv, or unlabelled
                continue
            top = max(counter.values())
            assert got[row] == min(c for c, k in counter.items() if k == top)
            num_labelled += 1
        assert num_labelled == len(votes)  # every voted cell is in the level's set


def point_miou(predictions: np.ndarray, batch: dict[str, np.ndarray]) -> float:
    """mIoU over the labelled classes present, counting real, labelled points only."""
    counted = batch["point_mask"] & (batch["labels"] != 0)
    ious = []
    for c in np.unique(batch["labels"][counted]):
        truth, pred = (batch["labels"] == c) & counted, (predictions == c) & counted
        ious.append((truth & pred).sum() / (truth | pred).sum())
    return float(np.mean(ious))


def test_gradients_finite_and_overfit_one_scan(setup):
    model, batch, variables, evaluate, optimizer, train_step = setup
    # placed as the step's outputs are, so the step compiles once (not again at step 2)
    replicated = mesh_lib.replicated_sharding(mesh_lib.make_data_mesh(jax.devices()[:1]))
    state = state_from_variables(variables, optimizer, replicated)
    history = []
    for step in range(30):
        state, metrics = train_step(state, batch)
        history.append(float(metrics["loss"]))
        if step == 0:
            # Adam's first update is -lr * g / (|g| + eps): a parameter moves iff its gradient
            # is non-zero, so the unchanged leaves are exactly those without a gradient.
            assert np.isfinite(float(metrics["grad_norm"]))
            before = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
            after = jax.tree.leaves(state.params)
            zero = [
                jax.tree_util.keystr(path)
                for (path, old), new in zip(before, after)
                if np.array_equal(np.asarray(old), np.asarray(new))
            ]
            # Only the released ResContextBlock's discarded bn1 gets no gradient.
            assert zero and all("context" in name and "conv2" in name for name in zero), zero
    assert np.isfinite(history).all() and history[-1] < 0.1 * history[0], history
    # About ten classes are present: uniform guessing gives an mIoU near 0.05. Voxel labels are
    # lossy on this coarse grid (mixed voxels), so even a perfect voxel fit stays below 1.
    # jitted: an eager Cylinder3D forward dispatches (and compiles) its ~1000 ops one by one
    train_forward = jax.jit(lambda v, b: model.apply(v, b, train=True, mutable=True))
    (train_logits, _), _ = train_forward(
        {"params": state.params, "batch_stats": state.batch_stats}, batch
    )
    train_miou = point_miou(np.asarray(jnp.argmax(train_logits, -1)), batch)  # batch statistics
    eval_logits, _, _ = evaluate(state.variables(), batch)
    eval_miou = point_miou(np.asarray(jnp.argmax(eval_logits, -1)), batch)  # running statistics
    assert train_miou > 0.75 and eval_miou > 0.75, (train_miou, eval_miou, history)


def test_point_refinement_head_matches_numpy(setup):
    base, batch, _, _, _, _ = setup
    model = base.clone(point_refinement=True)
    key = jax.random.key(1, impl="unsafe_rbg")
    variables = jax.jit(lambda b: model.init(key, b, train=False))(batch)
    apply = jax.jit(lambda v, b: model.apply(v, b, train=False, mutable=["intermediates"]))
    (logits, aux), state = apply(variables, batch)
    point_hidden, gathered = (np.asarray(a) for a in state["intermediates"]["refine_inputs"][0])
    decoded = np.asarray(state["intermediates"]["decoded"][0])
    params, stats = variables["params"], variables["batch_stats"]["refine_bn"]
    logits = np.asarray(logits)
    for b in range(2):
        real = batch["point_mask"][b]
        _, point_row = np.unique(numpy_cells(batch["points"][b][real]), axis=0, return_inverse=True)
        point_row = point_row.reshape(-1)
        # Each point sees its own voxel's final decoder feature...
        np.testing.assert_array_equal(gathered[b][real], decoded[b][point_row])
        # ...and the head is Dense -> BN (running statistics) -> ReLU -> Dense, in float64 here.
        fused = np.concatenate([point_hidden[b][real], gathered[b][real]], -1).astype(np.float64)
        hidden = fused @ np.asarray(params["refine0"]["kernel"]) + params["refine0"]["bias"]
        hidden = (hidden - stats["mean"]) / np.sqrt(np.asarray(stats["var"]) + 1e-5)
        hidden = hidden * params["refine_bn"]["scale"] + params["refine_bn"]["bias"]
        expected = np.maximum(hidden, 0) @ params["refine1"]["kernel"] + params["refine1"]["bias"]
        np.testing.assert_allclose(logits[b][real], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(logits[b][~real], 0.0)
        # Unlike the voxel logits, points sharing a voxel get different refined logits.
        shared = np.bincount(point_row) > 1
        first_of_shared = [np.flatnonzero(point_row == r)[:2] for r in np.flatnonzero(shared)]
        assert any(
            not np.allclose(logits[b][real][i], logits[b][real][j]) for i, j in first_of_shared
        )
    assert aux["loss_logits"].shape == (2, model.level_capacities[0], NUM_CLASSES)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"capacities": (64, 64, 64, 64)}, "capacities"),
        ({"feature_level": 5}, "feature_level"),
        ({"loss_label_vote": "mode"}, "loss_label_vote"),
        ({"conv_method": "dense"}, "conv_method"),
    ],
)
def test_bad_config_raises(kwargs, message):
    model = Cylinder3D(grid_shape=GRID_SHAPE, **kwargs)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda b: model.init(jax.random.key(0), b), make_batch())
