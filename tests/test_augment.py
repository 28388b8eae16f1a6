"""Tests for leakjax.augment against independent numpy references (complex-number rotation)."""

import numpy as np
import pytest

from leakjax.augment import (
    AugmentConfig,
    AugmentParams,
    apply_augment,
    augment_points,
    sample_augment_params,
)


def _scan(num_points: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0.0, 10.0, size=(num_points, 3))
    remission = rng.uniform(0.0, 1.0, size=(num_points, 1))
    return np.concatenate([xyz, remission], axis=1).astype(np.float32)


def _reference(points: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Complex-plane version: rotate by e^{i theta}, conjugate/negate for flips, then scale."""
    planar = points[:, 0].astype(np.float64) + 1j * points[:, 1].astype(np.float64)
    planar = planar * np.exp(1j * params.rotation_rad)
    real, imag = planar.real, planar.imag
    if params.flip_x:
        real = -real
    if params.flip_y:
        imag = -imag
    out = np.stack(
        [
            real * params.scale + params.translation_m[0],
            imag * params.scale + params.translation_m[1],
            points[:, 2] + params.translation_m[2],
            points[:, 3],
        ],
        axis=1,
    )
    return out


@pytest.mark.parametrize(
    "params",
    [
        AugmentParams(0.3, False, False, 1.0, (0.0, 0.0, 0.0)),
        AugmentParams(-0.7, True, False, 0.96, (0.1, -0.2, 0.05)),
        AugmentParams(0.1, False, True, 1.04, (-0.1, 0.0, 0.2)),
        AugmentParams(0.5, True, True, 1.01, (0.0, 0.3, -0.1)),
    ],
)
def test_apply_matches_complex_reference(params):
    points = _scan()
    before = points.copy()
    out = apply_augment(points, params)
    assert out.dtype == np.float32 and out.shape == points.shape
    np.testing.assert_allclose(out, _reference(points, params), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(points, before)  # input untouched


def test_rotation_and_flip_preserve_norms_and_rotate_by_angle():
    points = _scan()
    angle = 0.4
    out = apply_augment(points, AugmentParams(angle, False, False, 1.0, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(
        np.linalg.norm(out[:, :2], axis=1), np.linalg.norm(points[:, :2], axis=1), rtol=1e-5
    )
    turned = np.angle(
        (out[:, 0] + 1j * out[:, 1]) / (points[:, 0] + 1j * points[:, 1]).astype(np.complex128)
    )
    np.testing.assert_allclose(turned, angle, atol=1e-5)
    np.testing.assert_array_equal(out[:, 2:], points[:, 2:])
    flipped = apply_augment(points, AugmentParams(0.0, True, True, 1.0, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(flipped[:, :2], -points[:, :2])
    # Scaling multiplies planar norms only; pairwise distances in z are unchanged.
    scaled = apply_augment(points, AugmentParams(0.0, False, False, 1.05, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(
        np.linalg.norm(scaled[:, :2], axis=1), 1.05 * np.linalg.norm(points[:, :2], axis=1), 1e-5
    )
    np.testing.assert_array_equal(scaled[:, 2], points[:, 2])


def test_determinism_per_seed_and_distribution_of_parameters():
    points = _scan()
    first = augment_points(points, np.random.default_rng(123))
    again = augment_points(points, np.random.default_rng(123))
    other = augment_points(points, np.random.default_rng(124))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)

    rng = np.random.default_rng(7)
    draws = [sample_augment_params(rng) for _ in range(4000)]
    rotations = np.array([d.rotation_rad for d in draws])
    scales = np.array([d.scale for d in draws])
    translations = np.array([d.translation_m for d in draws])
    flip_types = np.array([int(d.flip_x) + 2 * int(d.flip_y) for d in draws])
    assert rotations.min() >= -np.pi / 4 and rotations.max() <= np.pi / 4
    assert rotations.min() < -0.7 and rotations.max() > 0.7  # spans the range
    assert scales.min() >= 0.95 and scales.max() <= 1.05
    np.testing.assert_allclose(translations.std(axis=0), 0.1, rtol=0.08)
    np.testing.assert_allclose(translations.mean(axis=0), 0.0, atol=0.01)
    counts = np.bincount(flip_types, minlength=4) / len(draws)
    np.testing.assert_allclose(counts, 0.25, atol=0.03)


def test_disabled_steps_are_identity_and_bad_input_raises():
    points = _scan(50)
    identity = AugmentConfig(
        max_rotation_rad=0.0, flip=False, scale_range=(1.0, 1.0), translation_std_m=0.0
    )
    np.testing.assert_allclose(augment_points(points, np.random.default_rng(0), identity), points)
    with pytest.raises(ValueError, match="points"):
        apply_augment(points[:, :3], sample_augment_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="scale_range"):
        sample_augment_params(np.random.default_rng(0), AugmentConfig(scale_range=(1.1, 1.0)))
