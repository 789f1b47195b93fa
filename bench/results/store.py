"""The results dataset: one parquet part file per finished cell.

Layout::

    RESULTS/<sweep>/<trial_id>.parquet     rows of one finished cell
    RESULTS/<sweep>/corrupt/...           unreadable parts, moved aside (and rerun)

A part is written to a temporary file in the same directory, flushed and fsync'ed,
then renamed over its final name (``os.replace``), so a crash leaves either the old
state or the whole new file, never half a file. A trial is *done* when its part
exists, is readable, has the :data:`REQUIRED` columns and records no ``failed`` row:
a failure (out of memory, a crash) is retried by a plain rerun, while ``diverged``
and ``skipped`` are results and stay. ``--force`` rewrites done trials too. A part
that is unreadable or lacks a required column is moved to ``corrupt/`` and rerun.
Temporary files of a killed writer (``.*.tmp``) are ignored and may be deleted.

Rows are validated against :data:`connbench.results.schema.COLUMNS` on write (unknown columns are
an error, missing ones are filled with NA) and read back with the schema's dtypes.
This module never imports torch.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from connbench.files import atomic_write
from connbench.registry import SpecError, did_you_mean
from connbench.results.schema import COLUMN_NAMES, DTYPES

CORRUPT_DIR = "corrupt"
# Columns without which a part cannot be reported or judged done. Other columns may be
# missing (parts written before the schema grew) and read as NA.
REQUIRED = ("trial_id", "kind", "status", "metric", "value")

_ARROW = {"string": pa.string(), "Int64": pa.int64(), "float64": pa.float64(),
          "boolean": pa.bool_()}
_LIST_COLUMNS = {c for c, t in DTYPES.items() if t == "object"}  # samples: list<double>


class StoreError(ValueError):
    """Rows that do not fit the schema."""


@functools.lru_cache(maxsize=1)
def arrow_schema() -> pa.Schema:
    """The parquet schema of a part file, in connbench.results.schema column order."""
    return pa.schema([(c, pa.list_(pa.float64()) if c in _LIST_COLUMNS else _ARROW[DTYPES[c]])
                      for c in COLUMN_NAMES])


# ----------------------------------------------------------------------- paths


def sweep_dir(results_dir: str | Path, sweep: str) -> Path:
    """``results_dir/sweep``; the name must be a plain directory name."""
    if not sweep or "/" in sweep or sweep in (".", ".."):
        raise SpecError(f"sweep name {sweep!r} cannot be a results directory name")
    return Path(results_dir) / sweep


def part_path(results_dir: str | Path, sweep: str, trial_id: str) -> Path:
    """Where the rows of one cell live."""
    if not trial_id or "/" in trial_id or trial_id.startswith("."):
        raise StoreError(f"trial_id {trial_id!r} cannot be a file name")
    return sweep_dir(results_dir, sweep) / f"{trial_id}.parquet"


def check_writable(results_dir: str | Path, sweep: str | None = None) -> Path:
    """Create the results (and sweep) directory and prove a file can be written there.

    Raises SpecError naming the directory and the reason, before any work is done.
    """
    target = sweep_dir(results_dir, sweep) if sweep else Path(results_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".probe-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise SpecError(f"results directory {str(target)!r} cannot be written "
                        f"({exc.strerror or exc}); pass --results DIR with a writable "
                        "directory") from None
    return target


# ---------------------------------------------------------------------- rows


def coerce(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the schema's columns, order and dtypes.

    Unknown columns raise StoreError (with a did-you-mean); missing ones become NA;
    ``samples`` becomes a list of floats (empty when absent).
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    unknown = [c for c in df.columns if c not in DTYPES]
    if unknown:
        hints = "".join(f"; {c!r}{hint}" for c in unknown
                        if (hint := did_you_mean(str(c), COLUMN_NAMES)))
        raise StoreError(f"unknown result column(s) {', '.join(map(repr, unknown))}{hints}; "
                         "the columns are listed in connbench.results.schema (add new ones there)")
    out = {}
    for col in COLUMN_NAMES:
        values = df[col] if col in df.columns else pd.Series([None] * len(df), dtype=object)
        out[col] = _coerce_column(col, values.reset_index(drop=True))
    return pd.DataFrame(out, columns=COLUMN_NAMES)


def _coerce_column(col: str, values: pd.Series) -> pd.Series:
    dtype = DTYPES[col]
    try:
        if col in _LIST_COLUMNS:
            return pd.Series([_float_list(v, col) for v in values], dtype=object)
        if dtype == "string":
            return values.map(lambda v: v if _isna(v) else str(v)).astype("string")
        if dtype == "Int64":
            numbers = pd.to_numeric(values.map(lambda v: None if _isna(v) else v))
            return numbers.astype("Int64")  # raises on 1.5: not silently truncated
        if dtype == "float64":
            return pd.to_numeric(values.map(lambda v: None if _isna(v) else v)).astype(
                "float64")
        if dtype == "boolean":
            return values.map(lambda v: pd.NA if _isna(v) else _bool(v)).astype("boolean")
    except (TypeError, ValueError) as exc:
        bad = next((v for v in values if not _fits(v, dtype)), None)
        raise StoreError(f"column {col!r} must hold {dtype} values; got {bad!r} ({exc})") \
            from None
    raise StoreError(f"column {col!r} has unsupported schema dtype {dtype!r}")


def _isna(v: Any) -> bool:
    if isinstance(v, (list, tuple, dict)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _bool(v: Any) -> bool:
    # pandas turns [1, None] into [1.0, NaN], so 0.0/1.0 are booleans too; strings are not.
    if isinstance(v, str) or not hasattr(v, "__bool__") or v not in (0, 1):
        raise ValueError(f"{v!r} is not a boolean")
    return bool(v)


def _fits(v: Any, dtype: str) -> bool:
    try:
        if _isna(v):
            return True
        if dtype == "Int64":
            return float(v).is_integer()
        if dtype == "float64":
            float(v)
        if dtype == "boolean":
            _bool(v)
        return True
    except (TypeError, ValueError):
        return False


def _float_list(v: Any, col: str) -> list[float]:
    if v is None or (not hasattr(v, "__len__") and _isna(v)):
        return []
    try:
        return [float(x) for x in v]
    except (TypeError, ValueError):
        raise StoreError(f"column {col!r} must hold a list of numbers; got {v!r}") from None


# --------------------------------------------------------------------- writing


def write_trial(results_dir: str | Path, sweep: str, trial_id: str,
               rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Validate one cell's rows and write them atomically; returns the part path.

    Every row must carry this ``trial_id`` (a missing one is filled in). An existing
    part is replaced, which is what ``--force`` needs.
    """
    df = coerce(rows)
    if df.empty:
        raise StoreError(f"cell {trial_id}: no rows to write; a cell records at least one "
                         "row, even when it failed or was skipped")
    ids = set(df["trial_id"].dropna())
    if ids - {trial_id}:
        raise StoreError(f"rows of cell {trial_id} carry other trial_id(s): "
                         f"{', '.join(sorted(ids - {trial_id}))}")
    df["trial_id"] = df["trial_id"].fillna(trial_id)
    if "sweep" in df and df["sweep"].isna().any():
        df["sweep"] = df["sweep"].fillna(sweep)
    path = part_path(results_dir, sweep, trial_id)
    table = pa.Table.from_pandas(df, schema=arrow_schema(), preserve_index=False)
    atomic_write(path, lambda fh: pq.write_table(table, fh), prefix=f".{trial_id}.")
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------- reading


def _parts(results_dir: str | Path, sweep: str) -> list[Path]:
    d = sweep_dir(results_dir, sweep)
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def _quarantine(path: Path, exc: Exception) -> None:
    """Move an unreadable part aside so that its cell counts as not done."""
    dest_dir = path.parent / CORRUPT_DIR
    dest = dest_dir / path.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    try:
        dest_dir.mkdir(exist_ok=True)
        os.replace(path, dest)
    except FileNotFoundError:  # another reader moved it first
        return
    except OSError as err:  # a read-only results directory: leave it, skip it
        warnings.warn(f"unreadable result file {path} ({type(exc).__name__}: {exc}) is "
                      f"skipped; it could not be moved aside ({err.strerror or err})",
                      RuntimeWarning, stacklevel=3)
        return
    warnings.warn(f"unreadable result file {path} ({type(exc).__name__}: {exc}) moved to "
                  f"{dest}; its cell will run again", RuntimeWarning, stacklevel=3)


def _read_part(path: Path) -> pa.Table | None:
    try:
        table = pq.read_table(path)
        if table.num_rows == 0:
            raise ValueError("part file has no rows")
        _check_required(table.column_names)
        return table
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is handled the same way
        _quarantine(path, exc)
        return None


def _check_required(columns: Iterable[str]) -> None:
    missing = [c for c in REQUIRED if c not in set(columns)]
    if missing:
        raise ValueError(f"part file lacks required column(s) {', '.join(missing)}")


def part_statuses(results_dir: str | Path, sweep: str) -> dict[str, set[str]]:
    """trial_id -> the statuses its part records, for every valid part of a sweep.

    Only the footer and the ``status`` column are read. A part that is unreadable,
    empty or lacks a :data:`REQUIRED` column is moved to ``corrupt/`` with a warning
    and left out, so its trial runs again.
    """
    out: dict[str, set[str]] = {}
    for path in _parts(results_dir, sweep):
        try:
            meta = pq.read_metadata(path)
            if meta.num_rows == 0:
                raise ValueError("part file has no rows")
            _check_required(meta.schema.to_arrow_schema().names)
            status = pq.read_table(path, columns=["status"]).column("status")
            out[path.stem] = {str(s) for s in status.to_pylist()}
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001
            _quarantine(path, exc)
    return out


def done_ids(results_dir: str | Path, sweep: str) -> set[str]:
    """Ids of the finished trials: a valid part that records no ``failed`` row.

    A failed trial is not done (a rerun retries it); ``diverged`` and ``skipped`` are
    results. Invalid parts are moved aside (see :func:`part_statuses`).
    """
    return {tid for tid, statuses in part_statuses(results_dir, sweep).items()
            if "failed" not in statuses}


def _conform(table: pa.Table) -> pa.Table:
    """A part's table with exactly the schema's columns and types (missing ones null)."""
    schema = arrow_schema()
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


_PANDAS_TYPES = {pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(),
                 pa.bool_(): pd.BooleanDtype()}


def _to_frame(tables: list[pa.Table]) -> pd.DataFrame:
    # One arrow concat and one conversion: per-part pandas conversion dominated load().
    table = pa.concat_tables(tables) if tables else _conform(arrow_schema().empty_table())
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for col in _LIST_COLUMNS:
        df[col] = pd.Series([v or [] for v in table.column(col).to_pylist()], dtype=object)
    return df


def _read_conformed(path: Path) -> pa.Table | None:
    table = _read_part(path)
    if table is None:
        return None
    try:
        return _conform(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        _quarantine(path, exc)  # a column of a type the schema cannot take
        return None


def read_trial(results_dir: str | Path, sweep: str, trial_id: str) -> pd.DataFrame | None:
    """The rows of one finished cell, or None when it is not done (or was unreadable)."""
    path = part_path(results_dir, sweep, trial_id)
    table = _read_conformed(path) if path.exists() else None
    return None if table is None else _to_frame([table])


def load(results_dir: str | Path, sweep: str,
         trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Every row of a sweep (optionally only some cells), with the schema's dtypes.

    Raises FileNotFoundError, naming the command that produces results, when the
    sweep has no readable part (with ``trial_ids``: an empty frame when the sweep has
    parts but none of those cells). Unreadable parts are moved aside with a warning.
    Columns a part lacks (written before the schema grew) are NA; columns the schema
    no longer has are dropped.
    """
    wanted = None if trial_ids is None else set(trial_ids)
    parts = _parts(results_dir, sweep)
    tables = []
    for path in parts:
        if wanted is not None and path.stem not in wanted:
            continue
        table = _read_conformed(path)
        if table is not None:
            tables.append(table)
    if not tables and not (wanted is not None and parts):
        where = sweep_dir(results_dir, sweep)
        raise FileNotFoundError(
            f"no results for sweep {sweep!r} in {str(where)!r}; run "
            f"`connbench run {sweep} --results {results_dir}` first")
    return _to_frame(tables)
