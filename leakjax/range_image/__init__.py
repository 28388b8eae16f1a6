"""Range images of LiDAR scans, as released by RangeNet++ (lidar-bonnetal) and SalsaNext.

Model-agnostic pieces for range-image segmentation networks:

  projection.py   spherical projection of a scan to range / xyz / remission / point-index images
                  and the pixel of every point (`spherical_projection`, `RangeProjection`)
  images.py       the 5 normalised input channels with the released sensor means and stds, the
                  label image, and per-point values read back from an image (`image_to_points`)
  postprocess.py  the released kNN post-processing that labels every point, occluded ones too

Typical use, one scan per row of a padded batch:

    project = lambda scan, mask: spherical_projection(scan, 64, 2048, point_mask=mask)
    proj = jax.vmap(project)(points, point_mask)              # points [B, N, 4]
    inputs = normalized_input(proj)                          # [B, H, W, 5]
    label_image = project_labels(point_labels, proj)         # [B, H, W] training target
    predicted = logits.argmax(-1)                            # [B, H, W]
    point_pred = knn_postprocess(proj.range, proj.point_range, predicted, proj.px, proj.py,
                                 point_mask, num_classes=20)  # [B, N], -1 for padded points
    # or without post-processing: image_to_points(predicted, proj.px, proj.py, fill_value=-1)
"""

from leakjax.range_image.images import (
    HDL64_IMG_MEANS,
    HDL64_IMG_STDS,
    INPUT_CHANNELS,
    image_to_points,
    normalized_input,
    project_labels,
)
from leakjax.range_image.postprocess import KNN_DEFAULTS, gaussian_window_weights, knn_postprocess
from leakjax.range_image.projection import (
    DEFAULT_FOV_DOWN_DEG,
    DEFAULT_FOV_UP_DEG,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    RangeProjection,
    check_projection_geometry,
    spherical_projection,
)

__all__ = [
    "DEFAULT_FOV_DOWN_DEG",
    "DEFAULT_FOV_UP_DEG",
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "HDL64_IMG_MEANS",
    "HDL64_IMG_STDS",
    "INPUT_CHANNELS",
    "KNN_DEFAULTS",
    "RangeProjection",
    "check_projection_geometry",
    "gaussian_window_weights",
    "image_to_points",
    "knn_postprocess",
    "normalized_input",
    "project_labels",
    "spherical_projection",
]
