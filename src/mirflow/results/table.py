"""The results of a dataset as tables: one row per track, and one row per (track, stem).

:func:`collect` reads every sidecar once and returns a :class:`ResultSet`: plain Python rows plus
the provenance of the values (mirflow version, each analyzer's version and parameters, the
dataset root). :func:`to_arrow` turns rows into a typed :class:`pyarrow.Table`, which the
exporters (:mod:`mirflow.results.export`), :func:`mirflow.load` and the HTML report share.

Track table columns, in order: ``track`` (folder path relative to the dataset, ``/``
separators), ``path`` (the mix, relative to the dataset), ``duration_s`` (s), ``sample_rate``
(Hz), ``channels``, ``codec`` (read from the file header, no decoding), every feature key found
in the sidecars (mirflow's in analyzer order, then the user's, sorted) and ``failed`` (list of
the analyzers whose last attempt failed; null when none did).

Stem table columns: ``track``, ``stem``, ``path`` (the stem file, relative), then the per-stem
features without their ``<stem>_`` prefix (``lufs``, ``spectral_centroid_mean``, ...).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.dataset import Track, discover, stem_files
from ..core.sidecar import RESERVED, SidecarError, read, records, to_jsonable

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Columns every track row starts with (file facts, not features).
BASE_COLUMNS = ("track", "path", "duration_s", "sample_rate", "channels", "codec")
STEM_BASE_COLUMNS = ("track", "stem", "path")
#: Parquet schema metadata key holding the provenance JSON.
METADATA_KEY = b"mirflow"


@dataclass
class AudioInfo:
    """What the file header says: duration in s, sample rate in Hz, channel count, codec name."""

    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    codec: str | None = None


_PCM_CONTAINERS = {"WAV", "WAVEX", "AIFF", "AU", "W64", "RF64", "CAF", "RAW", "IRCAM", "NIST", "VOC"}


def audio_info(path: Path) -> AudioInfo:
    """Read duration, sample rate, channels and codec from the header of ``path`` (libsndfile,
    else FFmpeg through PyAV); fields stay ``None`` when the file cannot be read. Decodes nothing."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - libsndfile cannot read it: ask FFmpeg
        return _audio_info_pyav(path)
    fmt, sub = str(info.format).upper(), str(info.subtype).upper()
    if fmt in _PCM_CONTAINERS:
        codec = sub.lower()  # pcm_16, pcm_24, float, ...
    elif fmt == "OGG":
        codec = sub.lower()  # vorbis, opus
    elif fmt in ("MPEG", "MP3") or sub.startswith("MPEG"):
        codec = "mp3"
    else:
        codec = fmt.lower()  # flac, ...
    frames, sr = int(info.frames), int(info.samplerate)
    return AudioInfo(frames / sr if sr > 0 and frames >= 0 else None, sr or None,
                     int(info.channels) or None, codec)


def _audio_info_pyav(path: Path) -> AudioInfo:
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.audio:
                return AudioInfo()
            stream = container.streams.audio[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            ctx = stream.codec_context
            return AudioInfo(duration, int(ctx.sample_rate or 0) or None,
                             int(ctx.channels or 0) or None, ctx.name)
    except Exception:  # noqa: BLE001 - an unreadable file simply has no header facts
        return AudioInfo()


@dataclass
class ResultSet:
    """Rows read from a dataset's sidecars; see the module docstring for the columns."""

    root: Path
    tracks: list[dict[str, Any]]
    track_columns: list[str]
    stems: list[dict[str, Any]]
    stem_columns: list[str]
    #: ``{analyzer: {"status": Counter, "errors": [(track, error)]}}`` from the records.
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def collect(dataset: str | os.PathLike[str], *, probe: bool = True,
            analyzers: dict[str, Any] | None = None) -> ResultSet:
    """Read every sidecar of ``dataset`` into rows.

    ``probe`` reads each mix's header for ``duration_s``/``sample_rate``/``channels``/``codec``
    (cheap: no decoding). ``analyzers`` maps names to configured instances; a record whose
    parameter hash matches one of them gets its readable parameters in the provenance (by default
    the dataset's ``mirflow.toml`` and the declared defaults are tried).
    """
    root = Path(dataset)
    tracks = discover(root)
    rows: list[dict[str, Any]] = []
    stem_rows: list[dict[str, Any]] = []
    owned: list[str] = []
    owned_set: set[str] = set()
    user: set[str] = set()
    stem_features: list[str] = []
    outcomes: dict[str, dict[str, Any]] = {}
    seen: dict[str, dict[str, Any]] = {}
    for track in tracks:
        try:
            data = read(track.sidecar)
        except SidecarError as exc:
            log.warning("skipping unreadable sidecar: %s", exc)
            data = {}
        recs = records(data)
        rel = track.relpath(root)
        row: dict[str, Any] = {"track": rel, "path": _relative(track.mix, root)}
        if probe:
            row.update(duration_s=None, sample_rate=None, channels=None, codec=None)
        mine: set[str] = set()
        failed = []
        for name, rec in recs.items():
            if not isinstance(rec, dict) or name == "source":
                continue
            for k in rec.get("keys", []):
                mine.add(k)
                if k not in owned_set:
                    owned_set.add(k)
                    owned.append(k)
            status = str(rec.get("status"))
            out = outcomes.setdefault(name, {"status": Counter(), "errors": []})
            out["status"][status] += 1
            if status == "error":
                failed.append(name)
                out["errors"].append((rel, str(rec.get("error") or "unknown error")))
            prov = seen.setdefault(name, {"versions": Counter(), "params": {}})
            prov["versions"][rec.get("version")] += 1
            entry = prov["params"].setdefault(str(rec.get("params", "")), {"tracks": 0})
            entry["tracks"] += 1
            readable = rec.get("parameters")
            if isinstance(readable, dict) and "values" not in entry:
                entry["values"] = readable
        for key, value in data.items():
            if key == RESERVED:
                continue
            row[key] = value
            if key not in mine:
                user.add(key)
        row["failed"] = sorted(failed) or None
        rows.append(row)
        stem_rows.extend(_stem_rows(track, root, data, stem_features))
    if probe:
        # header reads are file I/O and C code that releases the GIL: a few threads overlap them
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            for row, info in zip(rows, pool.map(audio_info, (t.mix for t in tracks), chunksize=64)):
                row.update(duration_s=info.duration_s, sample_rate=info.sample_rate,
                           channels=info.channels, codec=info.codec)
    base = [c for c in BASE_COLUMNS if probe or c in ("track", "path")]
    features = [c for c in owned if c not in user and c not in base] + sorted(user - owned_set - set(base))
    provenance = _provenance(root, seen, analyzers)
    return ResultSet(root=root, tracks=rows, track_columns=[*base, *features, "failed"],
                     stems=stem_rows, stem_columns=[*STEM_BASE_COLUMNS, *stem_features],
                     outcomes=outcomes, provenance=provenance)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _stem_rows(track: Track, root: Path, data: dict[str, Any], columns: list[str]) -> list[dict[str, Any]]:
    """One row per stem listed in ``stems_analyzed``; features are the ``<stem>_*`` keys the stems
    analyzer owns, without the prefix."""
    stems = data.get("stems_analyzed")
    rec = records(data).get("stems")
    if not isinstance(stems, list) or not isinstance(rec, dict):
        return []
    keys = [k for k in rec.get("keys", []) if k != "stems_analyzed"]
    files = stem_files(track.dir)
    out = []
    # longest names first, so a stem "bass_synth" is not read as stem "bass" with key "synth_..."
    names = sorted((s for s in stems if isinstance(s, str)), key=len, reverse=True)
    per: dict[str, dict[str, Any]] = {s: {} for s in names}
    for key in keys:
        for s in names:
            if key.startswith(f"{s}_"):
                per[s][key[len(s) + 1:]] = data.get(key)
                break
    for s in sorted(names):
        row: dict[str, Any] = {"track": track.relpath(root), "stem": s,
                               "path": _relative(files[s], root) if s in files else None}
        for k, v in per[s].items():
            row[k] = v
            if k not in columns:
                columns.append(k)
        out.append(row)
    return out


def _provenance(root: Path, seen: dict[str, dict[str, Any]],
                analyzers: dict[str, Any] | None) -> dict[str, Any]:
    from .. import __version__

    candidates = ({n: [a] for n, a in analyzers.items()} if analyzers is not None
                  else _configured(root, list(seen)))
    out: dict[str, Any] = {}
    for name, prov in seen.items():
        params = {}
        for digest, entry in prov["params"].items():
            item = {"tracks": entry["tracks"]}
            values = entry.get("values")
            if values is None:
                for inst in candidates.get(name, []):
                    if inst.params_hash() == digest:
                        values = to_jsonable(inst.hashed_params())
                        break
            if values is not None:
                item["values"] = values
            params[digest] = item
        cls_version = None
        try:
            from .. import analyzers as registry

            cls_version = registry.get(name).version
        except Exception:  # noqa: BLE001 - a record of an analyzer not installed here
            pass
        out[name] = {"versions": {str(k): n for k, n in prov["versions"].items()},
                     "installed_version": cls_version, "params": params}
    return {"mirflow_version": __version__, "dataset_root": str(root.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "analyzers": out}


def _configured(root: Path, names: list[str]) -> dict[str, list[Any]]:
    """Instances to match parameter hashes against: the dataset's ``mirflow.toml`` settings and
    the declared defaults of each analyzer."""
    from .. import analyzers as registry
    from ..core import config as cfgmod

    try:
        cfg = cfgmod.load(cfgmod.find_config(root, None))
        configured = cfg.analyzers
    except Exception:  # noqa: BLE001 - a broken config only costs readable parameters
        configured = {}
    out: dict[str, list[Any]] = {}
    for name in names:
        try:
            cls = registry.get(name)
        except Exception:  # noqa: BLE001
            continue
        insts = []
        for params in (configured.get(name), {}):
            if params is None:
                continue
            try:
                insts.append(cls(**params))
            except Exception:  # noqa: BLE001
                continue
        out[name] = insts
    return out


# -- typed columns -----------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def column_array(values: list[Any], *, for_csv: bool = False) -> "pa.Array":
    """A typed Arrow array for one column: numbers as int64/float64, strings, booleans, lists of
    numbers as ``list<double>``, lists of strings as ``list<string>`` (JSON text in CSV, which has
    no lists), anything else as JSON text. ``None`` stays null."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if not present:
        return pa.array(values, type=pa.null()) if not for_csv else pa.array(values, type=pa.string())
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.bool_())
    if all(_is_num(v) for v in present):
        if all(isinstance(v, int) for v in present):
            return pa.array(values, type=pa.int64())
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(values, type=pa.string())
    if all(isinstance(v, list) for v in present) and not for_csv:
        items = [x for v in present for x in v]
        if all(_is_num(x) for x in items):
            return pa.array([None if v is None else [float(x) for x in v] for v in values],
                            type=pa.list_(pa.float64()))
        if all(isinstance(x, str) for x in items):
            return pa.array(values, type=pa.list_(pa.string()))
    return pa.array([None if v is None else json.dumps(to_jsonable(v), ensure_ascii=False)
                     for v in values], type=pa.string())


def to_arrow(rows: list[dict[str, Any]], columns: list[str], *, for_csv: bool = False,
             metadata: dict[str, Any] | None = None) -> "pa.Table":
    """Rows as a typed Arrow table (see :func:`column_array`), provenance as schema metadata."""
    import pyarrow as pa

    table = pa.table({c: column_array([r.get(c) for r in rows], for_csv=for_csv) for c in columns})
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    return table


__all__ = ["AudioInfo", "ResultSet", "audio_info", "collect", "column_array", "to_arrow",
           "METADATA_KEY"]
