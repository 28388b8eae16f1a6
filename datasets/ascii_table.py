"""Strict parsing of whitespace-separated ASCII point tables (S3DIS and Semantic3D text files).

Both benchmarks ship points as text, one point per line (S3DIS `x y z r g b`, Semantic3D
`x y z intensity r g b`) and Semantic3D labels as one integer per line. Parsing goes through numpy's
C `loadtxt` (fast path); when that fails or the row count does not match the line count, a slow
line-by-line pass finds the first bad line and raises `MalformedLineError`, a ValueError whose
message is `<file>:<line>: <problem>: '<line text>'`. Nothing is dropped or truncated silently:

* every line must hold exactly the expected number of finite numbers (integers where asked);
* an empty (whitespace-only) line inside the data is an error; empty lines at the very end of a
  file are not data and are allowed (`read_text_lines` and the chunked readers strip them);
* bytes are decoded as latin-1 so that a stray control or non-ASCII byte is reported on its line
  instead of failing the whole file with a decoding error.

Used by `datasets.s3dis.io` and `datasets.semantic3d.io`.
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike

_FLOAT_TOKEN = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT_TOKEN = re.compile(r"[+-]?\d+")


class MalformedLineError(ValueError):
    """A line of a text table that is not what the format says; names file and line number."""

    def __init__(self, path: PathLike, line_number: int, problem: str, line_text: str = ""):
        self.path = Path(path)
        self.line_number = line_number
        self.problem = problem
        self.line_text = line_text
        shown = line_text if len(line_text) <= 120 else line_text[:117] + "..."
        super().__init__(f"{path}:{line_number}: {problem}: {shown!r}")


def read_text_lines(path: PathLike) -> list[str]:
    """All lines of a text file (latin-1, line endings removed), trailing empty lines dropped."""
    lines = Path(path).read_bytes().decode("latin-1").splitlines()
    return strip_trailing_blank(lines)


def strip_trailing_blank(lines: list[str]) -> list[str]:
    """`lines` without its trailing whitespace-only lines (in place; returns the same list)."""
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_float_rows(
    lines: Sequence[str], num_columns: int, path: PathLike, first_line_number: int = 1
) -> np.ndarray:
    """Parse lines of `num_columns` numbers each: float64 [len(lines), num_columns].

    `first_line_number` is the 1-based line number of `lines[0]` in `path`, for error messages.
    Raises MalformedLineError for a line with another number of columns, a token that is not a
    decimal number, a NaN or infinite value, or an empty line.
    """
    if not lines:
        return np.zeros((0, num_columns), np.float64)
    try:
        values = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
        fast_error = None
    except ValueError as error:
        values, fast_error = None, error
    if values is not None and values.shape == (len(lines), num_columns):
        finite = np.isfinite(values).all(axis=1)
        if finite.all():
            return values
    _diagnose(lines, num_columns, path, first_line_number, integer=False)
    raise ValueError(  # the fast path failed but no single line is at fault: report it as is
        f"{path}:{first_line_number}-{first_line_number + len(lines) - 1}: could not parse "
        f"{num_columns} numbers per line ({fast_error})"
    )


def parse_int_lines(lines: Sequence[str], path: PathLike, first_line_number: int = 1) -> np.ndarray:
    """Parse lines holding one integer each: int64 [len(lines)] (e.g. Semantic3D `.labels`)."""
    if not lines:
        return np.zeros(0, np.int64)
    try:
        values = np.loadtxt(lines, dtype=np.int64, comments=None, ndmin=1)
        fast_error = None
    except ValueError as error:
        values, fast_error = None, error
    if values is not None and values.shape == (len(lines),):
        return values
    _diagnose(lines, 1, path, first_line_number, integer=True)
    raise ValueError(
        f"{path}:{first_line_number}-{first_line_number + len(lines) - 1}: could not parse one "
        f"integer per line ({fast_error})"
    )


def check_range(
    values: np.ndarray,
    low: float,
    high: float,
    what: str,
    path: PathLike,
    lines: Sequence[str],
    first_line_number: int = 1,
) -> None:
    """Raise MalformedLineError at the first row of `values` [n] or [n, k] outside [low, high]."""
    values = np.asarray(values)
    outside = (values < low) | (values > high)
    if outside.ndim > 1:
        outside = outside.any(axis=tuple(range(1, outside.ndim)))
    if outside.any():
        row = int(np.argmax(outside))
        raise MalformedLineError(
            path, first_line_number + row, f"{what} outside {low:g}..{high:g}", lines[row]
        )


def format_rows(values: np.ndarray, formats: Sequence[str]) -> str:
    """Text of `values` [n, k], one row per line, column j written as `formats[j]` ("%.3f")."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(formats):
        raise ValueError(f"format_rows: values of shape {values.shape} for {len(formats)} formats")
    if values.shape[0] == 0:
        return ""
    integer_columns = [j for j, fmt in enumerate(formats) if fmt == "%d"]
    values = values.astype(np.float64)  # a copy: integer columns are rounded, not truncated, by %d
    values[:, integer_columns] = np.round(values[:, integer_columns])
    row_format = " ".join(formats)
    return "".join(row_format % tuple(row) + "\n" for row in values.tolist())


def _diagnose(
    lines: Sequence[str], num_columns: int, path: PathLike, first_line_number: int, integer: bool
) -> None:
    """Raise MalformedLineError for the first bad line of `lines`; return if none is found."""
    token_pattern = _INT_TOKEN if integer else _FLOAT_TOKEN
    kind = "an integer" if integer else "a number"
    for offset, line in enumerate(lines):
        line_number = first_line_number + offset
        tokens = line.split()
        if not tokens:
            raise MalformedLineError(path, line_number, "empty line inside the data", line)
        if len(tokens) != num_columns:
            raise MalformedLineError(
                path, line_number, f"expected {num_columns} columns, got {len(tokens)}", line
            )
        for column, token in enumerate(tokens, start=1):
            if not token_pattern.fullmatch(token):
                raise MalformedLineError(
                    path, line_number, f"column {column} is not {kind} ({token!r})", line
                )
        if not integer and not all(np.isfinite(float(token)) for token in tokens):
            raise MalformedLineError(path, line_number, "non-finite value", line)
