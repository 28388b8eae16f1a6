"""Datasets for leakjax: one package per dataset.

`datasets.semantic_kitti` reads (and writes) the official SemanticKITTI layout and holds its TFDS
builder; `datasets.synthetic` is a procedural 64-beam LiDAR world that writes the same layout, so
every consumer reads real and synthetic data through the same reader.
"""
