"""Datasets for leakjax: one package per dataset.

`datasets.semantic_kitti` reads (and writes) the official SemanticKITTI layout and holds its TFDS
builder; `datasets.synthetic` is a procedural 64-beam LiDAR world that writes the same layout, so
every consumer reads real and synthetic data through the same reader. `datasets.pascal_voc`,
`datasets.s3dis` and `datasets.semantic3d` do the same for their official layouts, with their own
synthetic stand-ins; `datasets.scenes` is the pre-processing cache and the samples (training crops,
whole-cloud evaluation) S3DIS and Semantic3D share; `datasets.registry` maps config names to them.
"""
