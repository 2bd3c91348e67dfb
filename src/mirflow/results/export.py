"""Export every track's sidecar as one table (Parquet or CSV): one row per track.

Columns: ``track`` (folder path relative to the dataset), ``path`` (absolute path of the mix),
every feature key found in the sidecars (mirflow's and the user's, sorted, mirflow's first), and
``failed`` (the analyzers whose last run on the track failed, comma separated). Lists (``beats``,
``chroma_mean``) are list columns in Parquet and JSON text in CSV; nested objects are JSON text.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..core.dataset import discover
from ..core.errors import ConfigError
from ..core.sidecar import RESERVED, SidecarError, read, records

log = logging.getLogger(__name__)


def collect_rows(dataset: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One dict per track and the ordered list of feature columns."""
    root = Path(dataset)
    rows: list[dict[str, Any]] = []
    owned: list[str] = []
    user: set[str] = set()
    for track in discover(root):
        try:
            data = read(track.sidecar)
        except SidecarError as exc:
            log.warning("skipping unreadable sidecar: %s", exc)
            data = {}
        recs = records(data)
        row: dict[str, Any] = {"track": track.relpath(root), "path": str(track.mix.resolve())}
        mine: set[str] = set()
        for rec in recs.values():
            if isinstance(rec, dict):
                for k in rec.get("keys", []):
                    mine.add(k)
                    if k not in owned:
                        owned.append(k)
        for key, value in data.items():
            if key != RESERVED:
                row[key] = value
                if key not in mine:
                    user.add(key)
        row["failed"] = ",".join(sorted(n for n, r in recs.items()
                                        if isinstance(r, dict) and r.get("status") == "error"))
        rows.append(row)
    columns = [c for c in owned if c not in user] + sorted(user - set(owned))
    return rows, columns


def _column(values: list[Any], *, for_csv: bool) -> list[Any]:
    def is_num_list(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                           for x in v)

    present = [v for v in values if v is not None]
    if present and all(is_num_list(v) for v in present) and not for_csv:
        return [None if v is None else [float(x) for x in v] for v in values]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) if any(isinstance(x, float) for x in present)
                else v for v in values]
    if present and all(isinstance(v, (str, bool)) for v in present) and \
            len({type(v) for v in present}) == 1:
        return values
    return [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]


def export(dataset: str | os.PathLike[str], output: str | os.PathLike[str]) -> int:
    """Write the table to ``output`` (``.parquet`` or ``.csv``); returns the number of rows."""
    import pyarrow as pa

    out = Path(output)
    fmt = out.suffix.lower()
    if fmt not in (".parquet", ".csv"):
        raise ConfigError(f"cannot export to {out.name}: use a .parquet or .csv file name")
    rows, features = collect_rows(dataset)
    names = ["track", "path", *features, "failed"]
    table = pa.table({n: pa.array(_column([r.get(n) for r in rows], for_csv=fmt == ".csv"))
                      for n in names}) if rows else pa.table({n: pa.array([], pa.string()) for n in names})
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, tmp)
    os.replace(tmp, out)
    return len(rows)
