"""Semantic3D scan lists: released training scans, validation split, test sets, submission names.

All scans sit in one directory (RandLA-Net's `original_data/`): `<name>.txt` and, for the 15
training scans, `<name>.labels` (from `sem8_labels_training.7z`; the archive of neugasse extracts
as `station1_xyz_intensity_rgb.txt` and is renamed). The validation split is RandLA-Net's, taken
from KPConv: the sorted training scans get split ids `KPCONV_SPLIT_IDS` and split 1 is validation,
i.e. bildstein_station3 and sg27_station2; the 13 others train. Test labels are on the benchmark
server only; submissions are one `.labels` file per test scan named as in `SUBMISSION_NAMES`.
"""

from pathlib import Path

from datasets.ascii_table import PathLike

TRAINING_SCANS: tuple[str, ...] = (
    "bildstein_station1_xyz_intensity_rgb",
    "bildstein_station3_xyz_intensity_rgb",
    "bildstein_station5_xyz_intensity_rgb",
    "domfountain_station1_xyz_intensity_rgb",
    "domfountain_station2_xyz_intensity_rgb",
    "domfountain_station3_xyz_intensity_rgb",
    "neugasse_station1_xyz_intensity_rgb",
    "sg27_station1_intensity_rgb",
    "sg27_station2_intensity_rgb",
    "sg27_station4_intensity_rgb",
    "sg27_station5_intensity_rgb",
    "sg27_station9_intensity_rgb",
    "sg28_station4_intensity_rgb",
    "untermaederbrunnen_station1_xyz_intensity_rgb",
    "untermaederbrunnen_station3_xyz_intensity_rgb",
)
KPCONV_SPLIT_IDS: tuple[int, ...] = (0, 1, 4, 5, 3, 4, 3, 0, 1, 2, 3, 4, 2, 0, 5)
VALIDATION_SPLIT_ID = 1

VALIDATION_SCANS: tuple[str, ...] = tuple(
    name
    for name, split_id in zip(sorted(TRAINING_SCANS), KPCONV_SPLIT_IDS)
    if split_id == VALIDATION_SPLIT_ID
)
TRAIN_SCANS: tuple[str, ...] = tuple(n for n in sorted(TRAINING_SCANS) if n not in VALIDATION_SCANS)

# test scan -> submission file name (RandLA-Net's `ascii_files`, the benchmark's naming)
SEMANTIC8_SUBMISSION_NAMES: dict[str, str] = {
    "birdfountain_station1_xyz_intensity_rgb": "birdfountain1.labels",
    "castleblatten_station1_intensity_rgb": "castleblatten1.labels",
    "castleblatten_station5_xyz_intensity_rgb": "castleblatten5.labels",
    "marketplacefeldkirch_station1_intensity_rgb": "marketsquarefeldkirch1.labels",
    "marketplacefeldkirch_station4_intensity_rgb": "marketsquarefeldkirch4.labels",
    "marketplacefeldkirch_station7_intensity_rgb": "marketsquarefeldkirch7.labels",
    "sg27_station10_intensity_rgb": "sg27_10.labels",
    "sg27_station3_intensity_rgb": "sg27_3.labels",
    "sg27_station6_intensity_rgb": "sg27_6.labels",
    "sg27_station8_intensity_rgb": "sg27_8.labels",
    "sg28_station2_intensity_rgb": "sg28_2.labels",
    "sg28_station5_xyz_intensity_rgb": "sg28_5.labels",
    "stgallencathedral_station1_intensity_rgb": "stgallencathedral1.labels",
    "stgallencathedral_station3_intensity_rgb": "stgallencathedral3.labels",
    "stgallencathedral_station6_intensity_rgb": "stgallencathedral6.labels",
}
REDUCED8_SUBMISSION_NAMES: dict[str, str] = {
    "MarketplaceFeldkirch_Station4_rgb_intensity-reduced": "marketsquarefeldkirch4-reduced.labels",
    "StGallenCathedral_station6_rgb_intensity-reduced": "stgallencathedral6-reduced.labels",
    "sg27_station10_rgb_intensity-reduced": "sg27_10-reduced.labels",
    "sg28_Station2_rgb_intensity-reduced": "sg28_2-reduced.labels",
}
SUBMISSION_NAMES: dict[str, str] = {**SEMANTIC8_SUBMISSION_NAMES, **REDUCED8_SUBMISSION_NAMES}
SEMANTIC8_TEST_SCANS: tuple[str, ...] = tuple(sorted(SEMANTIC8_SUBMISSION_NAMES))
REDUCED8_TEST_SCANS: tuple[str, ...] = tuple(sorted(REDUCED8_SUBMISSION_NAMES))

SPLITS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_SCANS,
    "validation": VALIDATION_SCANS,
    "training": tuple(sorted(TRAINING_SCANS)),  # train + validation, for a final model
    "semantic-8": SEMANTIC8_TEST_SCANS,
    "reduced-8": REDUCED8_TEST_SCANS,
}
LABELLED_SPLITS = ("train", "validation", "training")


def submission_file_name(scan_name: str) -> str:
    """The benchmark's file name for predictions of a test scan (e.g. "sg27_10-reduced.labels")."""
    if scan_name not in SUBMISSION_NAMES:
        raise ValueError(f"{scan_name!r} is not a semantic-8 or reduced-8 test scan")
    return SUBMISSION_NAMES[scan_name]


def scan_files(
    data_dir: PathLike, scan_name: str, require_labels: bool
) -> tuple[Path, Path | None]:
    """(`<name>.txt`, `<name>.labels` or None) in `data_dir`; ValueError for a missing file."""
    txt_path = Path(data_dir) / f"{scan_name}.txt"
    if not txt_path.is_file():
        raise ValueError(f"{txt_path}: scan file does not exist")
    if not require_labels:
        return txt_path, None
    labels_path = txt_path.with_suffix(".labels")
    if not labels_path.is_file():
        raise ValueError(f"{labels_path}: labels of scan {scan_name} do not exist")
    return txt_path, labels_path


def split_files(
    data_dir: PathLike, split: str, scan_names: tuple[str, ...] | None = None
) -> list[tuple[Path, Path | None]]:
    """(txt, labels or None) of every scan of a split, in the split's (sorted) order.

    `scan_names` replaces the official list (e.g. for a subset); labels are required for the
    labelled splits and not read for the test sets.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLITS)}")
    names = SPLITS[split] if scan_names is None else scan_names
    return [scan_files(data_dir, name, split in LABELLED_SPLITS) for name in names]
