"""Export a dataset's results as one file: Parquet, CSV or JSON Lines.

The columns are those of :mod:`mirflow.results.table`: one row per track (default) or, with
``stems=True``, one row per track and stem (long format). Formats, chosen by the file name:

- ``.parquet``: typed columns (``list<double>`` for ``beats``/``chroma_mean``, ``list<string>`` for
  ``stems`` and ``failed``) and the provenance as JSON in the schema metadata under ``mirflow``
  (mirflow version, dataset root, each analyzer's versions and parameters, creation time).
  Loads with pandas, DuckDB, polars and Hugging Face ``datasets``.
- ``.csv``: lists and nested objects as JSON text; nulls as empty cells (numbers stay numbers).
- ``.jsonl`` / ``.ndjson``: one JSON object per line, lists as JSON lists, nulls as ``null``.

Files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.fsutil import atomic_path
from ..core.sidecar import to_jsonable
from .table import ResultSet, collect, to_arrow

FORMATS = (".parquet", ".csv", ".jsonl", ".ndjson")


def collect_rows(dataset: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One dict per track and the ordered list of its columns (kept for older scripts)."""
    rs = collect(dataset)
    return rs.tracks, rs.track_columns


def export(dataset: str | os.PathLike[str], output: str | os.PathLike[str], *,
           stems: bool = False, probe: bool = True) -> int:
    """Write the track table (or the per-stem table with ``stems``) of ``dataset`` to ``output``
    (``.parquet``, ``.csv``, ``.jsonl``); returns the number of rows written."""
    out = Path(output)
    fmt = out.suffix.lower()
    if fmt not in FORMATS:
        raise ConfigError(f"cannot export to {out.name}: use a .parquet, .csv or .jsonl file name")
    rs = collect(dataset, probe=probe)
    return write(rs, out, stems=stems)


def write(rs: ResultSet, output: Path, *, stems: bool = False) -> int:
    """Write an already collected :class:`ResultSet` (see :func:`export`)."""
    rows, columns = (rs.stems, rs.stem_columns) if stems else (rs.tracks, rs.track_columns)
    fmt = output.suffix.lower()
    with atomic_path(output) as tmp:
        if fmt == ".parquet":
            import pyarrow.parquet as pq

            meta = dict(rs.provenance, table="stems" if stems else "tracks")
            pq.write_table(to_arrow(rows, columns, metadata=meta), tmp)
        elif fmt == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(to_arrow(rows, columns, for_csv=True), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps({c: to_jsonable(row.get(c)) for c in columns},
                                       ensure_ascii=False, allow_nan=False) + "\n")
    return len(rows)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance stored in an exported Parquet file (``{}`` when there is none)."""
    import pyarrow.parquet as pq

    from .table import METADATA_KEY

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


__all__ = ["FORMATS", "collect_rows", "export", "read_metadata", "write"]
