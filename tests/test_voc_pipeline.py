"""LEAK on images: the VOC entry point's pipeline with DeepLabV3 on the synthetic VOC stand-in."""

import numpy as np

from experiments.configs import voc as voc_configs
from leakjax import pipeline


def test_voc_pipeline_scores_every_labelled_pixel(tmp_path):
    """All four phases on images (crops in training, whole images at their own size in
    evaluation): the validation confusion counts exactly the pixels whose label is not 255,
    background (class 0) included, and the hierarchy groups the 21 VOC classes."""
    config = voc_configs.get_config("smoke")
    workdir = tmp_path / "voc"
    cache = str(tmp_path / "cache")
    result = pipeline.run_pipeline(config, workdir, cache_dir=cache)
    assert list(result["runs"]) == ["baseline", "leak"]
    data = pipeline.setup(config, workdir, cache_dir=cache).data
    labels = [data.validation[i]["labels"] for i in range(len(data.validation))]
    scored = sum(int(np.sum(lab != 255)) for lab in labels)
    assert sum(int(np.sum(lab == 0)) for lab in labels) > 0  # background is there and scored
    for run in ("baseline", "leak"):
        assert result["runs"][run]["num_labelled"] == scored
        assert len(result["runs"][run]["iou_per_class"]) == 21
    assert result["class_names"][0] == "background"
    for name in ("hierarchy.json", "dendrogram.png", "report.md", "curves.png"):
        assert (workdir / name).is_file(), name
