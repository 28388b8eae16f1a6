"""The official SemanticKITTI label configuration, embedded as Python tables.

Generated from `config/semantic-kitti.yaml` of the semantic-kitti-api repository
(https://github.com/PRBonn/semantic-kitti-api), which is under the MIT licence reproduced below.
The values are copied unchanged; `tests/test_semantic_kitti_labels.py` checks them against a copy of
that file in `tests/data/semantic-kitti.yaml`. Keys are raw label ids (low 16 bits of a `.label`
entry) except in `LEARNING_MAP_INV_TABLE` and `LEARNING_IGNORE_TABLE`, whose keys are training
ids 0..19.
"""

# The MIT License
#
# Copyright (c) 2019, University of Bonn
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in
# all copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
# THE SOFTWARE.

# raw id -> class name
LABEL_NAMES = {
    0: "unlabeled",
    1: "outlier",
    10: "car",
    11: "bicycle",
    13: "bus",
    15: "motorcycle",
    16: "on-rails",
    18: "truck",
    20: "other-vehicle",
    30: "person",
    31: "bicyclist",
    32: "motorcyclist",
    40: "road",
    44: "parking",
    48: "sidewalk",
    49: "other-ground",
    50: "building",
    51: "fence",
    52: "other-structure",
    60: "lane-marking",
    70: "vegetation",
    71: "trunk",
    72: "terrain",
    80: "pole",
    81: "traffic-sign",
    99: "other-object",
    252: "moving-car",
    253: "moving-bicyclist",
    254: "moving-person",
    255: "moving-motorcyclist",
    256: "moving-on-rails",
    257: "moving-bus",
    258: "moving-truck",
    259: "moving-other-vehicle",
}

# raw id -> (blue, green, red) colour, 0..255
COLOR_MAP_BGR = {
    0: (0, 0, 0),
    1: (0, 0, 255),
    10: (245, 150, 100),
    11: (245, 230, 100),
    13: (250, 80, 100),
    15: (150, 60, 30),
    16: (255, 0, 0),
    18: (180, 30, 80),
    20: (255, 0, 0),
    30: (30, 30, 255),
    31: (200, 40, 255),
    32: (90, 30, 150),
    40: (255, 0, 255),
    44: (255, 150, 255),
    48: (75, 0, 75),
    49: (75, 0, 175),
    50: (0, 200, 255),
    51: (50, 120, 255),
    52: (0, 150, 255),
    60: (170, 255, 150),
    70: (0, 175, 0),
    71: (0, 60, 135),
    72: (80, 240, 150),
    80: (150, 240, 255),
    81: (0, 0, 255),
    99: (255, 255, 50),
    252: (245, 150, 100),
    256: (255, 0, 0),
    253: (200, 40, 255),
    254: (30, 30, 255),
    255: (90, 30, 150),
    257: (250, 80, 100),
    258: (180, 30, 80),
    259: (255, 0, 0),
}

# raw id -> fraction of all points in the SemanticKITTI training data with that label
CONTENT = {
    0: 0.018889854628292943,
    1: 0.0002937197336781505,
    10: 0.040818519255974316,
    11: 0.00016609538710764618,
    13: 2.7879693665067774e-05,
    15: 0.00039838616015114444,
    16: 0.0,
    18: 0.0020633612104619787,
    20: 0.0016218197275284021,
    30: 0.00017698551338515307,
    31: 1.1065903904919655e-08,
    32: 5.532951952459828e-09,
    40: 0.1987493871255525,
    44: 0.014717169549888214,
    48: 0.14392298360372,
    49: 0.0039048553037472045,
    50: 0.1326861944777486,
    51: 0.0723592229456223,
    52: 0.002395131480328884,
    60: 4.7084144280367186e-05,
    70: 0.26681502148037506,
    71: 0.006035012012626033,
    72: 0.07814222006271769,
    80: 0.002855498193863172,
    81: 0.0006155958086189918,
    99: 0.009923127583046915,
    252: 0.001789309418528068,
    253: 0.00012709999297008662,
    254: 0.00016059776092534436,
    255: 3.745553104802113e-05,
    256: 0.0,
    257: 0.00011351574470342043,
    258: 0.00010157861367183268,
    259: 4.3840131989471124e-05,
}

# raw id -> training id (0 = ignored)
LEARNING_MAP_TABLE = {
    0: 0,
    1: 0,
    10: 1,
    11: 2,
    13: 5,
    15: 3,
    16: 5,
    18: 4,
    20: 5,
    30: 6,
    31: 7,
    32: 8,
    40: 9,
    44: 10,
    48: 11,
    49: 12,
    50: 13,
    51: 14,
    52: 0,
    60: 9,
    70: 15,
    71: 16,
    72: 17,
    80: 18,
    81: 19,
    99: 0,
    252: 1,
    253: 7,
    254: 6,
    255: 8,
    256: 5,
    257: 5,
    258: 4,
    259: 5,
}

# training id -> raw id written in submissions
LEARNING_MAP_INV_TABLE = {
    0: 0,
    1: 10,
    2: 11,
    3: 15,
    4: 18,
    5: 20,
    6: 30,
    7: 31,
    8: 32,
    9: 40,
    10: 44,
    11: 48,
    12: 49,
    13: 50,
    14: 51,
    15: 70,
    16: 71,
    17: 72,
    18: 80,
    19: 81,
}

# training id -> ignored in training and evaluation
LEARNING_IGNORE_TABLE = {
    0: True,
    1: False,
    2: False,
    3: False,
    4: False,
    5: False,
    6: False,
    7: False,
    8: False,
    9: False,
    10: False,
    11: False,
    12: False,
    13: False,
    14: False,
    15: False,
    16: False,
    17: False,
    18: False,
    19: False,
}

# official sequence splits (sequence numbers as two-digit directory names)
SPLIT_SEQUENCES = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "valid": ("08",),
    "test": ("11", "12", "13", "14", "15", "16", "17", "18", "19", "20", "21"),
}
