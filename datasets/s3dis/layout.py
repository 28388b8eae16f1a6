"""The S3DIS release layout: its directory, its six areas, the 272 official rooms, room listing.

`<root>/Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/` (root may also be the
release directory itself). Room names are `<type>_<k>` with k = 1..count for each room type of an
area; `ROOM_TYPE_COUNTS` is the release's room list (RandLA-Net's and PointNet's `anno_paths.txt`)
written as counts, 44 + 40 + 23 + 49 + 68 + 48 = 272 rooms.
"""

from pathlib import Path

from datasets.ascii_table import PathLike

RELEASE_DIR_NAME = "Stanford3dDataset_v1.2_Aligned_Version"
AREAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

ROOM_TYPE_COUNTS: dict[int, dict[str, int]] = {
    1: {"WC": 1, "conferenceRoom": 2, "copyRoom": 1, "hallway": 8, "office": 31, "pantry": 1},
    2: {"WC": 2, "auditorium": 2, "conferenceRoom": 1, "hallway": 12, "office": 14, "storage": 9},
    3: {"WC": 2, "conferenceRoom": 1, "hallway": 6, "lounge": 2, "office": 10, "storage": 2},
    4: {"WC": 4, "conferenceRoom": 3, "hallway": 14, "lobby": 2, "office": 22, "storage": 4},
    5: {
        "WC": 2,
        "conferenceRoom": 3,
        "hallway": 15,
        "lobby": 1,
        "office": 42,
        "pantry": 1,
        "storage": 4,
    },
    6: {
        "conferenceRoom": 1,
        "copyRoom": 1,
        "hallway": 6,
        "lounge": 1,
        "office": 37,
        "openspace": 1,
        "pantry": 1,
    },
}


def area_name(area: int | str) -> str:
    """Normalise an area (5, "5", "Area_5") to its directory name "Area_5"."""
    text = str(area)
    text = text[len("Area_") :] if text.startswith("Area_") else text
    if not text.isdigit() or int(text) not in AREAS:
        raise ValueError(f"area {area!r} is not one of {AREAS}")
    return f"Area_{int(text)}"


def official_room_names(area: int | str) -> list[str]:
    """The release's room names of an area, sorted (e.g. Area 1: "WC_1", ..., "pantry_1")."""
    counts = ROOM_TYPE_COUNTS[int(area_name(area)[len("Area_") :])]
    return sorted(f"{kind}_{k}" for kind, count in counts.items() for k in range(1, count + 1))


def release_dir(root: PathLike) -> Path:
    """The release directory: `root` itself or `root/Stanford3dDataset_v1.2_Aligned_Version`."""
    root = Path(root)
    nested = root / RELEASE_DIR_NAME
    if nested.is_dir():
        return nested
    if any((root / name).is_dir() for name in map(area_name, AREAS)):
        return root
    raise ValueError(f"{root}: neither {RELEASE_DIR_NAME}/ nor Area_N/ directories found")


def area_dir(root: PathLike, area: int | str) -> Path:
    """`<release>/Area_N`; raises ValueError when it does not exist."""
    directory = release_dir(root) / area_name(area)
    if not directory.is_dir():
        raise ValueError(f"{directory}: area directory does not exist")
    return directory


def list_rooms(root: PathLike, area: int | str, require_official: bool = False) -> list[Path]:
    """Room directories of an area (those with an `Annotations/` directory), sorted by name.

    With `require_official`, every room of the release must be there (ValueError naming the
    missing ones); extra rooms are listed either way. An area without rooms is an error.
    """
    directory = area_dir(root, area)
    rooms = sorted(path for path in directory.iterdir() if (path / "Annotations").is_dir())
    if not rooms:
        raise ValueError(f"{directory}: no rooms (directories with Annotations/)")
    if require_official:
        missing = sorted(set(official_room_names(area)) - {room.name for room in rooms})
        if missing:
            raise ValueError(
                f"{directory}: {len(missing)} rooms of the release are missing: {missing[:10]}"
            )
    return rooms


def scene_name(room_dir: PathLike) -> str:
    """mmdetection3d's scene name of a room: ".../Area_1/office_2" -> "Area_1_office_2"."""
    room_dir = Path(room_dir)
    return f"{area_name(room_dir.parent.name)}_{room_dir.name}"
