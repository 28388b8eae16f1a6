"""Benchmark of Cylinder3D: parameter count vs. the released architecture, and CPU cost.

  python -m experiments.bench_cylinder3d [--init-sizes 8 16 32] [--reps 7] [--out PATH]

1. Parameter count of our Flax model at init_size 32 (trainable `params` only) next to the count
   of the released PyTorch model computed independently from its layer list (see
   `released_parameter_count`): conv weights are kernel volume x C_in x C_out (spconv convs have no
   bias except the classifier), Linear layers C_in x C_out + C_out, BatchNorm 2 x C (weight and
   bias; running statistics are buffers, not parameters, in both frameworks).
2. On one ~120k-point synthetic scan, CPU with 2 threads: forward time (eval mode), train-step time
   (forward + backward + adam update, loss = CE + Lovasz-softmax on the voxel logits) and peak
   memory, for each init_size. Every (init_size, mode) runs in its own subprocess so that
   `ru_maxrss` is that setting's peak resident memory (compilation included); XLA's own estimate
   (arguments + outputs + temporaries of the compiled executable) is reported beside it.
   Times are the median of `--reps` runs after one warm-up run.
Prints a table and writes JSON (default experiments/results/bench_cylinder3d.json).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "results" / "bench_cylinder3d.json"
NUM_CLASSES = 20


def released_parameter_count(
    init_size: int = 32,
    num_classes: int = NUM_CLASSES,
    point_feature_dim: int = 9,
    point_widths: tuple[int, ...] = (64, 128, 256, 256),
    compressed: int = 16,
) -> dict[str, int]:
    """Parameters of the released `cylinder_asym`, per component, from its layer shapes."""

    def conv(kernel, c_in, c_out):
        return int(np.prod(kernel)) * c_in * c_out

    def bn(c):
        return 2 * c

    counts = {}
    # cylinder_fea: BN(9), then Linear/BN/ReLU x3, then a bare Linear; compression Linear + ReLU.
    point = bn(point_feature_dim)
    c_in = point_feature_dim
    for index, width in enumerate(point_widths):
        point += c_in * width + width
        if index < len(point_widths) - 1:
            point += bn(width)
        c_in = width
    point += point_widths[-1] * compressed + compressed
    counts["point_net"] = point
    i = init_size
    k133, k313, k333 = (1, 3, 3), (3, 1, 3), (3, 3, 3)
    # ResContextBlock(16, i): conv1 (1,3,3), conv1_2 (3,1,3), conv2 (3,1,3), conv3 (1,3,3), 4 BN.
    counts["context"] = (
        conv(k133, compressed, i)
        + conv(k313, i, i)
        + conv(k313, compressed, i)
        + conv(k133, i, i)
        + 4 * bn(i)
    )
    # ResBlocks: conv1 (3,1,3) in->out, conv1_2 (1,3,3), conv2 (1,3,3) in->out, conv3 (3,1,3),
    # 4 BN, pooling SparseConv3d 3x3x3 out->out.
    down_channels = [(i, 2 * i), (2 * i, 4 * i), (4 * i, 8 * i), (8 * i, 16 * i)]
    for index, (c_in, c_out) in enumerate(down_channels):
        counts[f"down{index}"] = (
            conv(k313, c_in, c_out)
            + conv(k133, c_out, c_out)
            + conv(k133, c_in, c_out)
            + conv(k313, c_out, c_out)
            + 4 * bn(c_out)
            + conv(k333, c_out, c_out)
        )
    # UpBlocks: trans 3x3x3 in->out + BN, inverse conv 3x3x3 out->out, conv1 (1,3,3), conv2
    # (3,1,3), conv3 3x3x3 out->out, each + BN.
    up_channels = [(16 * i, 16 * i), (16 * i, 8 * i), (8 * i, 4 * i), (4 * i, 2 * i)]
    for index, (c_in, c_out) in enumerate(up_channels):
        counts[f"up{index}"] = (
            conv(k333, c_in, c_out)
            + bn(c_out)
            + conv(k333, c_out, c_out)
            + conv(k133, c_out, c_out)
            + conv(k313, c_out, c_out)
            + conv(k333, c_out, c_out)
            + 3 * bn(c_out)
        )
    # ReconBlock(2i, 2i): (3,1,1), (1,3,1), (1,1,3) convs, each + BN.
    counts["recon"] = 3 * conv((3, 1, 1), 2 * i, 2 * i) + 3 * bn(2 * i)
    # Classifier: SubMConv3d(4i, classes, 3x3x3, bias=True).
    counts["logits"] = conv(k333, 4 * i, num_classes) + num_classes
    counts["total"] = sum(counts.values())
    return counts


def flax_parameter_count(init_size: int) -> dict[str, int]:
    """Our model's `params` per top-level submodule (shape evaluation only, no compute)."""
    import jax

    from leakjax.models.cylinder3d import Cylinder3D

    model = Cylinder3D(init_size=init_size, capacities=(64, 64, 64, 64, 64))
    batch = _tiny_batch()
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
    counts = {
        name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
        for name, tree in variables["params"].items()
    }
    counts["total"] = sum(counts.values())
    return counts


def _tiny_batch():
    points = np.zeros((1, 8, 4), np.float32)
    points[0, :, 0] = np.linspace(2.0, 20.0, 8)
    return {
        "points": points,
        "point_mask": np.ones((1, 8), bool),
        "labels": np.ones((1, 8), np.int32),
    }


def synthetic_scan(seed: int = 0, num_points_target: int = 120_000):
    """One ~120k-point scan: (points float32 [P, 4], labels int32 [P])."""
    from tests_support_scan import procedural_scan  # noqa: F401  (replaced below)

    raise NotImplementedError
