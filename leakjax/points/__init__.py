"""Point-set operations for point-based models (RandLA-Net): kNN, random and grid sub-sampling.

  knn.py        knn / knn_batch: k nearest neighbours, host (scipy cKDTree) or device (chunked
                `lax.top_k` brute force, jittable), batched with padding masks and sentinels
  sampling.py   SamplingHierarchy: the released RandLA-Net index pyramid (per-level neighbours,
                pooling and nearest up-sampling indices of a shuffled crop), host or device
  grid.py       grid_subsample: barycentre, mean features and majority label per cubic cell,
                with each input point's cell (host numpy)

Typical use in an input pipeline (host) for one batch of shuffled 45,056-point crops:

    pyramid = sampling_hierarchy_host(crops, ratios=(4, 4, 4, 4), k=16, num_threads=2)
    # pyramid.neighbours[l]: int32 [B, N_l, 16]; pools[l]: [B, N_{l+1}, 16];
    # pyramid.upsamples[l]: int32 [B, N_l, 1]
"""

from leakjax.points.grid import GridSubsampling, grid_subsample
from leakjax.points.knn import (
    BACKENDS,
    DEFAULT_CHUNK_SIZE,
    knn,
    knn_batch,
    knn_device,
    knn_device_batch,
    knn_host,
    knn_host_batch,
)
from leakjax.points.sampling import (
    SamplingHierarchy,
    hierarchy_sizes,
    sampling_hierarchy_device,
    sampling_hierarchy_host,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_CHUNK_SIZE",
    "GridSubsampling",
    "SamplingHierarchy",
    "grid_subsample",
    "hierarchy_sizes",
    "knn",
    "knn_batch",
    "knn_device",
    "knn_device_batch",
    "knn_host",
    "knn_host_batch",
    "sampling_hierarchy_device",
    "sampling_hierarchy_host",
]
