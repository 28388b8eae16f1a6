"""Cylinder3D (Zhu et al., CVPR 2021) in Flax on leakjax.sparse, with LEAK's feature hooks.

Matches the released code (xinge008/Cylinder3D, `cylinder_asym` with `init_size` 32):
  * cylindrical partition over (rho, phi, z), 480 x 360 x 32 cells over rho [0, 50] m,
    phi [-pi, pi], z [-4, 2] m; points outside are clipped into the border cells. As released the
    cell size is range / (shape - 1) (`released_intervals=True`), so the last cell starts exactly at
    the upper bound; we express that as a VoxelGrid whose upper bound is extended by one cell,
    which gives the same cell of every point as the released clip-then-floor.
  * 9-d point features [rho, phi, z] - voxel centre, rho, phi, z, x, y, remission.
  * point MLP BN(9) -> 64 -> 128 -> 256 -> 256 (Linear, BN, ReLU; last Linear bare), max-pooled
    per voxel, then Linear(256, 16) + ReLU.
  * the asymmetric residual U-Net of `cylinder3d_blocks` and a 3x3x3 classifier with bias.
The loss targets are per-voxel (`aux["loss_*"]`), as released; the per-point logits are the
logits of each point's voxel. Voxel capacities are static per level; any overflow sets
`aux["overflow"]` (the trainer raises).

Point-wise refinement (paper Sec. 3.5, absent from the released code), `point_refinement=True`:
our reading of the paper is that the voxel features after the 3D network are projected back to
the points through the point-voxel map and fused with the point-wise features from before the
network (the point MLP output), then an MLP predicts refined per-point logits. Here: concat
[point MLP feature (256), gathered final voxel feature (4 * init_size)] -> Dense(hidden) -> BN ->
ReLU -> Dense(num_classes). The returned per-point logits are then the refined ones; the voxel
loss tensors are unchanged and the trainer adds a point-wise CE on the returned logits.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax import sparse
from leakjax.layers import TORCH_INIT
from leakjax.models import cylinder3d_blocks as blocks
from leakjax.models.cylinder3d_features import (
    cylinder_grid,
    cylindrical_point_features,
    majority_label_all_votes,
)
from leakjax.train.batch import BatchSpec, point_cloud_spec

# Strides of the four released ResBlock poolings (height pooled in the first two only).
DOWN_STRIDES = ((2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1))
NUM_LEVELS = len(DOWN_STRIDES) + 1
# Sub-kernels run at each level, so the shared 3x3x3 map builds compact pair lists for them.
_ASYMMETRIC = ((1, 3, 3), (3, 1, 3), (3, 3, 3))
_DDCM = ((3, 1, 1), (1, 3, 1), (1, 1, 3))
# L0 presets (config.loss.preset; leakjax/train/trainer.py loss_fields):
#   released: the released code: CE + Lovasz-softmax, both on the voxel logits, no weighting;
#   paper:    the LEAK paper's text: "Lovasz-softmax loss for voxel features plus the cross-entropy
#             loss with inverse class weighting for point-feature refinement", i.e. Lovasz on the
#             voxel logits + inverse-frequency CE on the point-refined logits (needs
#             model.kwargs.point_refinement=True, which :full sets).
LOSS_PRESETS = {
    "released": {
        "ce_weight": 1.0,
        "ce_weighting": "none",
        "lovasz_weight": 1.0,
        "point_ce_weight": 0.0,
        "point_ce_weighting": "none",
    },
    "paper": {
        "ce_weight": 0.0,
        "ce_weighting": "none",
        "lovasz_weight": 1.0,
        "point_ce_weight": 1.0,
        "point_ce_weighting": "inverse",
    },
}

LEVEL_KERNELS = (_ASYMMETRIC + _DDCM, _ASYMMETRIC, _ASYMMETRIC, _ASYMMETRIC, ((3, 3, 3),))


def cumulative_strides() -> tuple[tuple[int, int, int], ...]:
    """Stride of each level's grid vs. the input grid: ((1,1,1), (2,2,2), (4,4,4), (8,8,4), ...)."""
    out = [(1, 1, 1)]
    for stride in DOWN_STRIDES:
        out.append(tuple(a * b for a, b in zip(out[-1], stride)))
    return tuple(out)


class CylinderPointNet(nn.Module):
    """Per-point MLP, max-pooled per voxel, compressed (the released `cylinder_fea`).

    BatchNorm (`sparse.MaskedBatchNorm`) statistics are taken over the real points of the whole
    batch (masked), as the released model normalises the concatenated points of the batch.
    """

    widths: tuple[int, ...] = (64, 128, 256, 256)
    compressed_features: int = 16
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, point_feats, point_mask, point_to_voxel, capacity: int, train: bool):
        """point_feats [B, P, 9], point_mask bool [B, P], point_to_voxel int32 [B, P] ->
        (voxel features [B, N, compressed], per-point MLP features [B, P, widths[-1]])."""
        mask = point_mask[..., None]
        norm = lambda name: sparse.MaskedBatchNorm(  # noqa: E731
            use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, name=name
        )
        x = norm("bn_in")(point_feats, point_mask)
        for index, width in enumerate(self.widths[:-1]):
            x = sparse.RowDense(width, kernel_init=TORCH_INIT, name=f"dense{index}")(x)
            x = norm(f"bn{index}")(x, point_mask)
            x = nn.relu(x)
        x = sparse.RowDense(self.widths[-1], kernel_init=TORCH_INIT, name="dense_out")(x)
        x = jnp.where(mask, x, 0.0)
        pooled = sparse.voxel_reduce(x, point_to_voxel, capacity, reduce="max")  # [B, N, 256]
        compress = sparse.RowDense(
            self.compressed_features, kernel_init=TORCH_INIT, name="compress"
        )
        compressed = nn.relu(compress(pooled))
        return compressed, x


class Cylinder3D(nn.Module):
    """Cylinder3D with LEAK hooks; see the module docstring and docs/model_api.md.

    Attributes:
      num_classes: output classes C (label ids 0..C-1, the ignored one included).
      ignore_index: the label id meaning "no label" (the label space's `no_label`; 0 for
        SemanticKITTI): not voted for feature labels, written where a voxel has none.
      grid_shape: cells along (rho, phi, z).
      grid_lower, grid_upper: bounds in (m, rad, m); points outside go to the border cells.
      released_intervals: cell size range / (shape - 1) as released (else range / shape).
      init_size: channel width of the U-Net (32 released; 8/16 for CPU runs).
      point_widths, compressed_features: the point MLP widths and the voxel input width.
      capacities: static voxel capacity of each of the 5 levels (input grid first), capped at
        the level's cell count. A ~120k-point synthetic scan has about 30.5k / 25k / 10.7k /
        7.6k / 3.6k active voxels on the default grid; the defaults leave room for denser scans.
      feature_level: 0..4, which encoder features LEAK aligns (4 = bottleneck, the pooled output
        of the last ResBlock; level l < 4 is the pre-pooling output of ResBlock l + 2, the skip).
      loss_label_vote: "released" = every point label votes, unlabelled (0) included, ties to the
        smallest id (the released `nb_process_label`); "non_ignored" = only labels != 0 vote.
      point_refinement: the paper's point-wise refinement module (see module docstring).
      refinement_hidden: hidden width of the refinement MLP.
      context_bn1_as_released: reproduce the released ResContextBlock bn1 typo (see blocks).
      bn_momentum: Flax momentum of all BatchNorms (0.9 = PyTorch's default 0.1).
      conv_method: sparse conv dataflow: "auto" (compact pair lists, fast at scale) or "gather"
        (the (N, K) reference dataflow; compiles faster, for tiny test configurations).
    """

    num_classes: int = 20
    ignore_index: int = 0
    grid_shape: tuple[int, int, int] = (480, 360, 32)
    grid_lower: tuple[float, float, float] = (0.0, -math.pi, -4.0)
    grid_upper: tuple[float, float, float] = (50.0, math.pi, 2.0)
    released_intervals: bool = True
    init_size: int = 32
    point_widths: tuple[int, ...] = (64, 128, 256, 256)
    compressed_features: int = 16
    capacities: tuple[int, int, int, int, int] = (65_536, 65_536, 32_768, 16_384, 8_192)
    feature_level: int = 4
    loss_label_vote: str = "released"
    point_refinement: bool = False
    refinement_hidden: int = 64
    context_bn1_as_released: bool = True
    bn_momentum: float = 0.9
    conv_method: str = "auto"

    LOSS_PRESETS = LOSS_PRESETS  # not a field: the L0 presets above

    def input_spec(self) -> BatchSpec:
        """The batch it reads: points float32 [B, P, 4] (x, y, z m, remission), labels, mask."""
        return point_cloud_spec(4)

    def _check_config(self) -> None:
        if len(self.capacities) != NUM_LEVELS:
            raise ValueError(f"Cylinder3D.capacities needs {NUM_LEVELS} entries (one per level)")
        if not 0 <= self.feature_level < NUM_LEVELS:
            raise ValueError(f"Cylinder3D.feature_level must be in [0, {NUM_LEVELS - 1}]")
        if self.conv_method not in ("auto", "gather"):
            raise ValueError("Cylinder3D.conv_method must be 'auto' or 'gather'")
        if self.loss_label_vote not in ("released", "non_ignored"):
            raise ValueError("Cylinder3D.loss_label_vote must be 'released' or 'non_ignored'")

    @property
    def level_capacities(self) -> tuple[int, ...]:
        """Static voxel capacity per level: the configured bucket, capped at the level's number
        of cells (a level can never hold more, so a larger bucket only wastes memory)."""
        shape, out = self.grid_shape, []
        for level, capacity in enumerate(self.capacities):
            if level > 0:  # spconv output extent with kernel 3, padding 1: ceil(n / stride)
                shape = tuple(-(-n // s) for n, s in zip(shape, DOWN_STRIDES[level - 1]))
            out.append(min(int(capacity), math.prod(shape)))
        return tuple(out)

    @property
    def grid(self) -> sparse.VoxelGrid:
        return cylinder_grid(
            self.grid_shape, self.grid_lower, self.grid_upper, self.released_intervals
        )

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool = False):
        """Segments a padded batch of scans.

        Args:
          batch: "points" float32 [B, P, 4] (x, y, z m, remission), "point_mask" bool [B, P],
            "labels" int32 [B, P] (0 = ignored; only used for the aux label tensors).
          train: batch statistics vs. running statistics in every BatchNorm.

        Returns:
          (per-point logits float32 [B, P, num_classes], aux dict per docs/model_api.md plus
           "feature_coords" int32 [B, Nf, 3] and "num_voxels" int32 [B] at the input level).
          With mutable=["intermediates"], each level's voxel set ("encoder_set_l": coords, mask),
          decoder output ("decoder_l": coords, mask, feats), the classifier input ("decoded")
          and the refinement inputs ("refine_inputs") are sown for inspection.
        """
        self._check_config()
        points, point_mask, labels = batch["points"], batch["point_mask"], batch["labels"]
        grid = self.grid
        capacities = self.level_capacities
        voxels = sparse.voxelize(points[..., :3], point_mask, grid, capacities[0])
        point_to_voxel = voxels.point_to_voxel  # [B, P]
        point_feats = cylindrical_point_features(points, voxels, grid)  # [B, P, 9]

        voxel_feats, point_hidden = CylinderPointNet(
            self.point_widths, self.compressed_features, self.bn_momentum, name="point_net"
        )(point_feats, point_mask, point_to_voxel, capacities[0], train)
        x = sparse.SparseTensor(
            coords=voxels.coords,
            feats=jnp.where(voxels.mask[..., None], voxel_feats, 0.0),
            mask=voxels.mask,
            spatial_shape=grid.shape,
        )

        norm = lambda **kw: sparse.SparseBatchNorm(momentum=self.bn_momentum, **kw)  # noqa: E731
        width = self.init_size
        # Kernel maps: one submanifold map per level, one down-sampling map per transition; the
        # inverse convs of the decoder reuse the down-sampling maps.
        method = self.conv_method
        level_kernels = LEVEL_KERNELS if method == "auto" else (((3, 3, 3),),) * NUM_LEVELS
        level_maps = [sparse.submanifold_map(x, pair_kernels=level_kernels[0])]
        down_maps, overflow = [], voxels.overflow
        self.sow("intermediates", "encoder_set_0", (x.coords, x.mask))
        x = blocks.ResContextBlock(
            width, norm, self.context_bn1_as_released, method, name="context"
        )(x, level_maps[0], train)
        skips = []
        for index, stride in enumerate(DOWN_STRIDES):
            coarse, down_map, level_overflow = sparse.downsample_map(
                x,
                kernel_size=(3, 3, 3),
                stride=stride,
                out_capacity=capacities[index + 1],
                pair_kernels=((3, 3, 3),),
            )
            overflow = overflow | level_overflow
            down_maps.append(down_map)
            level_maps.append(sparse.submanifold_map(coarse, pair_kernels=level_kernels[index + 1]))
            self.sow("intermediates", f"encoder_set_{index + 1}", (coarse.coords, coarse.mask))
            x, skip = blocks.ResBlock(
                width * 2 ** (index + 1), stride, norm, method, name=f"down{index}"
            )(x, level_maps[index], down_map, coarse, train)
            skips.append(skip)
        encoder = skips + [x]  # level l < 4: pre-pooling skip; level 4: the pooled bottleneck

        up_widths = (16 * width, 8 * width, 4 * width, 2 * width)
        for index, up_width in enumerate(up_widths):
            fine = len(DOWN_STRIDES) - 1 - index
            x = blocks.UpBlock(up_width, norm, method, name=f"up{index}")(
                x, skips[fine], level_maps[fine + 1], down_maps[fine], level_maps[fine], train
            )
            self.sow("intermediates", f"decoder_{fine}", (x.coords, x.mask, x.feats))
        recon = blocks.ReconBlock(2 * width, norm, method, name="recon")(x, level_maps[0], train)
        decoded = recon.replace(feats=jnp.concatenate([recon.feats, x.feats], axis=-1))
        self.sow("intermediates", "decoded", decoded.feats)
        voxel_logits = sparse.SubMConv3d(
            self.num_classes,
            kernel_size=(3, 3, 3),
            use_bias=True,
            kernel_init=TORCH_INIT,
            method=method,
            name="logits",
        )(decoded, level_maps[0])
        voxel_logits = jnp.where(decoded.mask[..., None], voxel_logits.feats, 0.0)
        # Pair lists have static sizes too; their default bound is the worst case, but keep the
        # flag honest if a caller ever tightens it.
        for kernel_map in level_maps + down_maps:
            overflow = overflow | kernel_map.overflow

        point_logits = sparse.gather_to_points(voxel_logits, point_to_voxel)  # [B, P, K]
        if self.point_refinement:
            point_logits = self._refine(point_hidden, decoded, point_to_voxel, point_mask, train)

        aux = self._aux(voxels, encoder, voxel_logits, labels, overflow)
        return point_logits, aux

    def _refine(self, point_hidden, decoded, point_to_voxel, point_mask, train):
        """Point-wise refinement: MLP on [point MLP feature, gathered voxel feature]."""
        mask = point_mask[..., None]
        gathered = sparse.gather_to_points(decoded.feats, point_to_voxel)
        self.sow("intermediates", "refine_inputs", (point_hidden, gathered))
        fused = jnp.concatenate([point_hidden, gathered], axis=-1)
        hidden = sparse.RowDense(self.refinement_hidden, kernel_init=TORCH_INIT, name="refine0")(
            fused
        )
        hidden = sparse.MaskedBatchNorm(
            use_running_average=not train, momentum=self.bn_momentum, name="refine_bn"
        )(hidden, point_mask)
        hidden = nn.relu(hidden)
        logits = sparse.RowDense(self.num_classes, kernel_init=TORCH_INIT, name="refine1")(hidden)
        return jnp.where(mask, logits, 0.0)

    def _aux(self, voxels, encoder, voxel_logits, labels, overflow) -> dict[str, jax.Array]:
        """The LEAK and loss tensors (docs/model_api.md)."""
        point_to_voxel = voxels.point_to_voxel
        capacity = self.level_capacities[0]
        if self.loss_label_vote == "released":
            loss_labels = majority_label_all_votes(
                labels, point_to_voxel, capacity, self.num_classes
            )
        else:
            loss_labels = sparse.voxel_majority_label(
                labels, point_to_voxel, capacity, self.num_classes, ignore_index=self.ignore_index
            )
        loss_labels = jnp.where(voxels.mask, loss_labels, self.ignore_index)

        level = self.feature_level
        features = encoder[level]
        stride = cumulative_strides()[level]
        # A point's cell at this level is floor(input cell / cumulative stride); with spconv-mode
        # down-sampling (kernel 3, stride 2, padding 1) that cell is always in the level's set.
        point_cells = jnp.take_along_axis(
            voxels.coords, jnp.maximum(point_to_voxel, 0)[..., None], axis=1
        ) // jnp.asarray(stride, jnp.int32)
        point_to_feature = sparse.find_rows(
            features.coords, features.mask, point_cells, point_to_voxel >= 0, features.spatial_shape
        )
        feature_labels = sparse.voxel_majority_label(
            labels, point_to_feature, features.capacity, self.num_classes, self.ignore_index
        )
        feature_labels = jnp.where(features.mask, feature_labels, self.ignore_index)
        return {
            "features": features.feats,
            "feature_mask": features.mask,
            "feature_labels": feature_labels.astype(jnp.int32),
            "feature_coords": features.coords,
            "loss_logits": voxel_logits,
            "loss_labels": loss_labels.astype(jnp.int32),
            "loss_mask": voxels.mask,
            "overflow": overflow,
            "num_voxels": voxels.num_voxels,
        }
