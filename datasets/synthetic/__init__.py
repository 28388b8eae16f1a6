"""A procedural street world seen by a simulated 64-beam LiDAR, written in the SemanticKITTI layout.

`generate(out_dir, seed, sequences, scans_per_sequence)` writes scans, labels and poses that the
`datasets.semantic_kitti` reader loads like the real data; `python -m datasets.synthetic` does the
same from the command line.
"""

from datasets.synthetic.generate import Scan, generate, render_scan
from datasets.synthetic.sensor import SensorConfig, beam_elevations_rad
from datasets.synthetic.world import StreetWorld, WorldConfig

__all__ = [
    "Scan",
    "SensorConfig",
    "StreetWorld",
    "WorldConfig",
    "beam_elevations_rad",
    "generate",
    "render_scan",
]
