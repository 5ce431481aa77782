"""The four record tables as typed DataFrames, and their deterministic, atomic files.

Every table has a fixed column set (:mod:`adamspec.reports.schema`) and fixed dtypes, so a
report built from a fresh run and one built from files read back look the same:

* integer columns are ``int64``; the summary's per-case measurements (``max_ulp``,
  ``max_free_ulp``) are nullable ``Int64`` because a skipped or crashed case has none;
* float columns are ``float64``, booleans ``bool``;
* string columns are pandas' string dtype with missing text stored as ``""`` (a CSV
  cannot tell a missing string from an empty one, so the frame does not either).

Files are written byte-for-byte reproducibly: rows sorted by :data:`SORT_KEYS` (then by
every remaining column, so duplicates of the key still have one order), schema column
order, no index, LF newlines, UTF-8, and floats as Python's shortest round-trip ``repr``
(pandas' default when no ``float_format`` is given), so a CSV read back is bit-identical.
Each file is written to a temporary file in the same directory and moved over the target
with :func:`os.replace`, so a reader never sees half a table.
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from adamspec.reports.schema import (
    FINGERPRINT_COLUMNS,
    PAIR_COLUMNS,
    PROFILE_COLUMNS,
    RESULTS_COLUMNS,
    SEPARATION_COLUMNS,
    SUMMARY_COLUMNS,
)

__all__ = [
    "DTYPES",
    "FILES",
    "SCHEMAS",
    "SORT_KEYS",
    "atomic_write",
    "conform",
    "frame",
    "read_tables",
    "sort_table",
    "write_tables",
]

#: Table name -> its columns, in file order.
SCHEMAS: dict[str, tuple[str, ...]] = {
    "results": RESULTS_COLUMNS,
    "summary": SUMMARY_COLUMNS,
    "fingerprints": FINGERPRINT_COLUMNS,
    "separation": SEPARATION_COLUMNS,
    "profiles": PROFILE_COLUMNS,
    "pairs": PAIR_COLUMNS,
}

#: Table name -> file name inside the output directory.
FILES: dict[str, str] = {
    "results": "results.parquet",
    "summary": "summary.csv",
    "fingerprints": "fingerprints.csv",
    "separation": "separation.csv",
    "profiles": "index_profile.csv",
    "pairs": "pairs.csv",
}

#: Tables a report folder may lack (read as empty).
OPTIONAL_TABLES: tuple[str, ...] = ("profiles", "pairs")

#: Table name -> the leading sort columns of its files (the remaining columns follow, in
#: schema order, as tie-breakers).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "results": ("implementation", "case", "mode", "step", "component"),
    "summary": ("implementation", "case"),
    "fingerprints": ("implementation", "rank", "variant"),
    "separation": ("variant_a", "variant_b", "case", "component"),
    "profiles": ("implementation", "case", "tensor", "first_index"),
    "pairs": ("implementation", "counterpart", "case", "component"),
}

_STR = "str"
_INT = "int64"
_NINT = "Int64"  # nullable: a value that may legitimately be absent
_FLOAT = "float64"
_BOOL = "bool"

#: Table name -> column -> dtype. A column not listed is a string column.
DTYPES: dict[str, dict[str, str]] = {
    "results": {
        "step": _INT,
        "ulp_error": _INT,
        "bits_error": _FLOAT,
        "scaled_ulp": _FLOAT,
        "coordinates": _INT,
    },
    "summary": {
        "steps": _INT,
        "max_ulp": _NINT,
        "median_ulp": _FLOAT,
        "max_free_ulp": _NINT,
        "first_failing_index": _INT,
        "failing_coordinates": _INT,
    },
    "fingerprints": {
        "rank": _INT,
        "max_ulp": _INT,
        "param_max_ulp": _INT,
        "cases": _INT,
        "documented": _BOOL,
        "within_budget": _BOOL,
        "within_cases": _INT,
    },
    "separation": {"max_ulp": _INT},
    "profiles": {
        "tensor": _INT,
        "first_index": _INT,
        "last_index": _INT,
        "max_multiple": _FLOAT,
    },
    "pairs": {"steps": _INT, "first_step_ulp": _NINT, "max_ulp": _NINT},
}


def _table_name(columns: Sequence[str]) -> str | None:
    """The schema table whose columns these are, or None for an ad-hoc column set."""
    cols = tuple(columns)
    for name, schema in SCHEMAS.items():
        if cols == schema:
            return name
    return None


def _check_columns(present: Sequence[str], columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in present]
    extra = [c for c in present if c not in columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise ValueError(f"{where}: {' and '.join(parts)}")


def _is_missing(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    return isinstance(x, float) and math.isnan(x)


def _as_int(x: Any, column: str, nullable: bool) -> Any:
    """One cell as a Python int (or NA), refusing anything that would be silently changed."""
    if _is_missing(x) or (isinstance(x, str) and x == ""):
        if nullable:
            return pd.NA
        raise ValueError(f"column {column!r} is int64 and cannot hold a missing value")
    if isinstance(x, bool):
        raise ValueError(f"column {column!r} is an integer column, got a boolean {x!r}")
    if isinstance(x, str):
        return int(x)
    try:
        as_int = int(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"column {column!r}: {x!r} is not an integer") from exc
    # Truncating 2.5 to 2 ULPs would misreport an error; only whole numbers convert.
    if as_int != x:
        raise ValueError(f"column {column!r}: {x!r} is not an integer")
    return as_int


def _as_float(x: Any) -> float:
    if _is_missing(x) or (isinstance(x, str) and x == ""):
        return math.nan
    return float(x)


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _as_bool(x: Any, column: str) -> bool:
    # bool("False") is True: text from a CSV must be parsed, never truth-tested.
    if isinstance(x, str):
        try:
            return _BOOL_TEXT[x.strip().lower()]
        except KeyError:
            raise ValueError(f"column {column!r}: {x!r} is not a boolean") from None
    if _is_missing(x):
        raise ValueError(f"column {column!r} is boolean and cannot hold a missing value")
    if x in (True, False):
        return bool(x)
    raise ValueError(f"column {column!r}: {x!r} is not a boolean")


def _coerce(series: pd.Series, column: str, dtype: str) -> pd.Series:
    kind = series.dtype.kind
    # Vectorised fast paths: a results table can hold millions of rows.
    if dtype in (_INT, _NINT) and kind in "iu":
        if kind == "u" and len(series) and series.max() > 2**63 - 1:
            raise ValueError(f"column {column!r}: a value does not fit in int64")
        return series.astype(dtype)
    if dtype in (_INT, _NINT) and kind == "f":
        finite = series.dropna()
        if dtype == _INT and len(finite) != len(series):
            raise ValueError(f"column {column!r} is int64 and cannot hold a missing value")
        # Truncating 2.5 to 2 ULPs would misreport an error; only whole numbers convert.
        if not (finite == finite.round()).all() or (finite.abs() >= 2.0**63).any():
            raise ValueError(f"column {column!r}: a value is not an int64 integer")
        return series.astype(dtype)
    if dtype == _FLOAT and kind in "iuf":
        return series.astype(dtype)
    if dtype == _BOOL and kind == "b":
        return series.astype(dtype)
    if dtype == _STR and isinstance(series.dtype, pd.StringDtype):
        return series.fillna("").astype(_STR)
    values = series.tolist()
    if dtype in (_INT, _NINT):
        ints = [_as_int(x, column, dtype == _NINT) for x in values]
        try:
            return pd.Series(ints, index=series.index, dtype=dtype, name=column)
        except OverflowError as exc:
            raise ValueError(f"column {column!r}: a value does not fit in int64") from exc
    if dtype == _FLOAT:
        return pd.Series(
            [_as_float(x) for x in values], index=series.index, dtype=dtype, name=column
        )
    if dtype == _BOOL:
        return pd.Series(
            [_as_bool(x, column) for x in values], index=series.index, dtype=dtype, name=column
        )
    text = ["" if _is_missing(x) else str(x) for x in values]
    return pd.Series(text, index=series.index, dtype=_STR, name=column)


def conform(df: pd.DataFrame, columns: Sequence[str], name: str | None = None) -> pd.DataFrame:
    """``df`` with exactly ``columns`` (in that order) and the schema's dtypes.

    Raises ValueError naming any missing or unexpected column, or a value that does not
    fit its column's type. ``columns`` that are not one of :data:`SCHEMAS` are only checked
    and reordered. Returns a new frame with a fresh ``RangeIndex``.
    """
    table = name or _table_name(columns)
    where = f"{table} table" if table else "table"
    _check_columns(list(df.columns), columns, where)
    if df.columns.duplicated().any():
        raise ValueError(
            f"{where}: duplicated columns {sorted(set(df.columns[df.columns.duplicated()]))}"
        )
    out = df.loc[:, list(columns)].reset_index(drop=True)
    if table is None:
        return out.copy()
    dtypes = DTYPES[table]
    return pd.DataFrame(
        {c: _coerce(out[c], c, dtypes.get(c, _STR)) for c in columns},
        index=pd.RangeIndex(len(out)),
    )


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A typed DataFrame from record dicts that each have exactly ``columns``.

    Raises ValueError naming the first row whose keys differ from the schema, and which
    columns it lacks or adds. An empty ``rows`` gives an empty frame with typed columns.
    """
    cols = list(columns)
    for i, row in enumerate(rows):
        if set(row) != set(cols) or len(row) != len(cols):
            table = _table_name(columns)
            _check_columns(list(row), cols, f"{table or 'table'} row {i}")
    df = pd.DataFrame(list(rows), columns=cols)
    return conform(df, columns)


def sort_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """``df`` in file order: :data:`SORT_KEYS` [name] first, then every other column."""
    columns = SCHEMAS[name]
    keys = list(SORT_KEYS[name]) + [c for c in columns if c not in SORT_KEYS[name]]
    # mergesort is stable, so even fully duplicated rows keep one reproducible order.
    return df.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a
    part; ``str`` is encoded as UTF-8. Returns the path."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    # os.open (not mkstemp) so the final file gets the umask's usual mode, not 0600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    # float_format=None: pandas writes repr(float), the shortest text that reads back exact.
    df.to_csv(buf, index=False, lineterminator="\n", na_rep="", float_format=None)
    return buf.getvalue().encode("utf-8")


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", index=False, compression="zstd")
    return buf.getvalue()


TableLike = pd.DataFrame | Sequence[Mapping[str, Any]]


def _as_table(data: TableLike, name: str) -> pd.DataFrame:
    columns = SCHEMAS[name]
    if isinstance(data, pd.DataFrame):
        return conform(data, columns, name)
    return frame(data, columns)


def write_tables(
    out_dir: str | os.PathLike[str],
    results: TableLike,
    summary: TableLike,
    fingerprints: TableLike,
    separation: TableLike,
    profiles: TableLike = (),
    pairs: TableLike = (),
) -> dict[str, Path]:
    """Validate, sort and write the tables into ``out_dir`` (created if needed).

    Each argument is a DataFrame or a list of record dicts. Writes ``results.parquet``,
    ``summary.csv``, ``fingerprints.csv``, ``separation.csv``, ``index_profile.csv`` and,
    when a compiled implementation ran beside its eager counterpart, ``pairs.csv``
    (so a run without pairs writes the same files as before there were any) atomically
    and returns table name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    given = {
        "results": results,
        "summary": summary,
        "fingerprints": fingerprints,
        "separation": separation,
        "profiles": profiles,
        "pairs": pairs,
    }
    # Validate everything before writing anything, so a bad table leaves no mixed set.
    tables = {name: sort_table(_as_table(data, name), name) for name, data in given.items()}
    if tables["pairs"].empty:
        del tables["pairs"]
    paths: dict[str, Path] = {}
    for name, df in tables.items():
        path = out / FILES[name]
        data = _parquet_bytes(df) if path.suffix == ".parquet" else _csv_bytes(df)
        paths[name] = atomic_write(path, data)
    return paths


def read_tables(out_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The tables written by :func:`write_tables`, with the same dtypes and order (an index
    profile missing from an older report folder, and pairs missing from a run without
    any, read as empty)."""
    out = Path(out_dir)
    tables: dict[str, pd.DataFrame] = {}
    for name, file in FILES.items():
        path = out / file
        if name in OPTIONAL_TABLES and not path.exists():
            tables[name] = frame([], SCHEMAS[name])
            continue
        if path.suffix == ".parquet":
            df = pd.read_parquet(path, engine="pyarrow")
        else:
            # Everything as text, nothing guessed: the schema decides each column's type.
            df = pd.read_csv(
                path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8"
            )
        tables[name] = conform(df, SCHEMAS[name], name)
    return tables
