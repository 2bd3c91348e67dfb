"""``mirflow report``: one self-contained HTML page describing a dataset's results.

The page opens offline (Plotly's JavaScript bundle, from the ``plotly`` package, is inlined; no
request leaves the page) and holds:

- counts: tracks, total duration, per analyzer ok / failed / blocked, codecs and sample rates;
- failures grouped by reason (numbers in messages are folded so one cause is one group);
- distributions: tempo, tempo confidence, key and mode, LUFS / LRA / true peak, spectral
  descriptors, classifier scores, and per-stem loudness (box plots);
- outliers a dataset builder cares about (see :class:`Thresholds`);
- a sortable, searchable track table.

It stays small and fast at any size: every chart is built from histograms and quartiles computed
here (a few hundred numbers per chart, never one point per track), and the track table holds at
most ``max_rows`` rows (the page says so when it is capped; ``mirflow export`` has them all).
Sizes and times at 100,000 tracks are measured by ``benchmarks/report_scale.py``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.fsutil import atomic_path
from .table import ResultSet, collect

KEYS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_ENHARMONIC = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb"}

#: (column, title, unit, fixed range or None) of the histograms, by section.
LOUDNESS_HISTS = [("lufs", "Integrated loudness", "LUFS", None), ("lra", "Loudness range", "LU", None),
                  ("true_peak_dbtp", "True peak", "dBTP", None)]
RHYTHM_HISTS = [("bpm", "Tempo", "BPM", (40.0, 200.0)),
                ("bpm_confidence", "Tempo confidence", "0-1", (0.0, 1.0))]
SPECTRAL_HISTS = [("spectral_centroid_mean", "Spectral centroid", "Hz", None),
                  ("spectral_bandwidth_mean", "Spectral bandwidth", "Hz", None),
                  ("spectral_rolloff_mean", "Spectral roll-off", "Hz", None),
                  ("spectral_flatness_mean", "Spectral flatness", "0-1", None),
                  ("spectral_flux_mean", "Spectral flux", "", None),
                  ("zero_crossing_rate_mean", "Zero-crossing rate", "per sample", None)]
CLASSIFIER_HISTS = [("danceability", "Danceability", "P", (0.0, 1.0)),
                    ("atonality", "Atonality", "P", (0.0, 1.0)),
                    ("instrumentalness", "Instrumentalness", "P", (0.0, 1.0)),
                    ("vocal_gender_female", "Vocal gender: female", "P", (0.0, 1.0))]
#: Columns of the track table, in order (those present in the data are shown).
TABLE_COLUMNS = [("track", "track"), ("duration_s", "duration s"), ("lufs", "LUFS"), ("lra", "LRA"),
                 ("true_peak_dbtp", "true peak dBTP"), ("bpm", "BPM"),
                 ("bpm_confidence", "tempo conf."), ("key", "key"), ("scale", "mode"),
                 ("spectral_centroid_mean", "centroid Hz"), ("danceability", "danceability"),
                 ("failed", "failed")]


@dataclass(frozen=True)
class Thresholds:
    """What counts as an outlier."""

    true_peak_dbtp: float = 0.0  #: true peak above this (dBTP) risks clipping after lossy encoding
    silent_lufs: float = -50.0  #: integrated loudness below this (LUFS), or none: near-silent
    short_s: float = 10.0  #: tracks shorter than this (s)
    low_tempo_confidence: float = 0.1  #: ``bpm_confidence`` below this: check the tempo by ear
    stem_full_scale_dbfs: float = -0.01  #: a stem sample peak at or above this (dBFS): clipped


def write_report(dataset: str | os.PathLike[str], output: str | os.PathLike[str], *,
                 max_rows: int = 5000, probe: bool = True, thresholds: Thresholds = Thresholds(),
                 title: str | None = None) -> Path:
    """Collect the results of ``dataset`` and write the report to ``output`` (atomically)."""
    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"cannot write a report to {out.name}: use a .html file name")
    rs = collect(dataset, probe=probe)
    page = build_report(rs, max_rows=max_rows, thresholds=thresholds,
                        title=title or f"mirflow report: {Path(dataset).resolve().name}",
                        shown_path=str(dataset))
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


# -- aggregation ---------------------------------------------------------------------------------

def _numbers(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """Finite numeric values of ``key`` (``None``, text and non-finite values left out)."""
    vals = [v for r in rows if isinstance(v := r.get(key), (int, float)) and not isinstance(v, bool)]
    arr = np.asarray(vals, dtype=np.float64)
    return arr[np.isfinite(arr)]


def histogram(values: np.ndarray, *, bins: int | None = None,
              value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Bin edges, counts and how many values were clipped into the end bins.

    Without a fixed ``value_range`` the range is the data's, cut at 3 interquartile ranges beyond
    the quartiles, so one extreme track (a silent file at -78 dBTP) does not squeeze every other
    bar into one bin; values outside are counted in the end bins. ``bins`` defaults to 2 sqrt(n),
    between 10 and 50.
    """
    n = int(values.size)
    bins = bins or int(np.clip(2 * np.sqrt(max(n, 1)), 10, 50))
    if value_range is not None:
        lo, hi = value_range
    elif n:
        q1, q3 = (float(x) for x in np.percentile(values, [25, 75]))
        iqr = q3 - q1
        lo = max(float(values.min()), q1 - 3 * iqr) if iqr > 0 else float(values.min())
        hi = min(float(values.max()), q3 + 3 * iqr) if iqr > 0 else float(values.max())
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    outside = int(np.count_nonzero((values < lo) | (values > hi)))
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.astype(int).tolist(),
            "clipped": outside}


def quartiles(values: np.ndarray) -> dict[str, float] | None:
    """Box-plot statistics (Tukey fences at 1.5 IQR, clamped to the data)."""
    if values.size == 0:
        return None
    q1, med, q3 = (float(x) for x in np.percentile(values, [25, 50, 75]))
    iqr = q3 - q1
    lower = float(values[values >= q1 - 1.5 * iqr].min())
    upper = float(values[values <= q3 + 1.5 * iqr].max())
    return {"q1": q1, "median": med, "q3": q3, "lowerfence": lower, "upperfence": upper,
            "mean": float(values.mean()), "n": int(values.size)}


def _fold(message: str) -> str:
    """A failure message with quoted paths and numbers folded, so one cause makes one group."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    text = re.sub(r"(['\"])[^'\"]*[/\\][^'\"]*\1", r"\1<path>\1", text)  # 'ds/x/full_mix.ogg'
    text = re.sub(r"\d+(\.\d+)?", "#", text)
    return text[:200]


def failure_groups(rs: ResultSet) -> list[dict[str, Any]]:
    """Failures grouped by reason: ``{reason, analyzers, tracks, examples}``, largest first."""
    by_reason: dict[str, dict[str, Any]] = {}
    for name, out in rs.outcomes.items():
        for track, error in out["errors"]:
            g = by_reason.setdefault(_fold(error), {"analyzers": set(), "tracks": set()})
            g["analyzers"].add(name)
            g["tracks"].add(track)
    groups = [{"reason": reason, "analyzers": sorted(g["analyzers"]), "tracks": len(g["tracks"]),
               "examples": sorted(g["tracks"])[:5]} for reason, g in by_reason.items()]
    return sorted(groups, key=lambda g: (-g["tracks"], g["reason"]))


def outliers(rs: ResultSet, th: Thresholds) -> list[dict[str, Any]]:
    """The outlier lists: ``{title, explanation, count, rows}`` (rows capped at 100)."""
    loud_ok = {r["track"] for r in rs.tracks if "loudness" not in (r.get("failed") or [])
               and ("lufs" in r or "true_peak_dbtp" in r)}

    def num(r: dict[str, Any], k: str) -> float | None:
        v = r.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    lists = []
    peak = [(r["track"], num(r, "true_peak_dbtp")) for r in rs.tracks
            if (num(r, "true_peak_dbtp") or -math.inf) > th.true_peak_dbtp]
    lists.append(("True peak over %g dBTP" % th.true_peak_dbtp,
                  "inter-sample peaks that clip in a decoder or after lossy encoding",
                  ["track", "true peak dBTP"], sorted(peak, key=lambda x: -x[1])))
    clipped = []
    for s in rs.stems:
        p = num(s, "peak_dbfs")
        if p is not None and p >= th.stem_full_scale_dbfs:
            clipped.append((s["track"], s["stem"], f"peak {p:.2f} dBFS"))
    for r in rs.tracks:
        n = num(r, "separation_clipped")
        if n:
            clipped.append((r["track"], "(separation)", f"{int(n)} samples clipped when writing"))
    lists.append(("Clipped stems", "a stem at full scale, or samples clipped when the stems were written",
                  ["track", "stem", "evidence"], clipped))
    silent = []
    for r in rs.tracks:
        if r["track"] not in loud_ok:
            continue
        lufs = num(r, "lufs")
        if lufs is None or lufs < th.silent_lufs:
            silent.append((r["track"], "none (below the gate)" if lufs is None else f"{lufs:.1f}"))
    lists.append((f"Near-silent tracks (below {th.silent_lufs:g} LUFS)",
                  "silence, a wrong file, or a broken decode", ["track", "LUFS"], silent))
    short = [(r["track"], num(r, "duration_s")) for r in rs.tracks
             if num(r, "duration_s") is not None and num(r, "duration_s") < th.short_s]
    lists.append((f"Very short tracks (under {th.short_s:g} s)", "stingers, previews, truncated files",
                  ["track", "duration s"], sorted(short, key=lambda x: x[1])))
    low = [(r["track"], num(r, "bpm"), num(r, "bpm_confidence")) for r in rs.tracks
           if num(r, "bpm_confidence") is not None and num(r, "bpm_confidence") < th.low_tempo_confidence]
    lists.append((f"Low tempo confidence (under {th.low_tempo_confidence:g})",
                  "check by ear: mirflow listen TRACK --beats -o check.wav",
                  ["track", "BPM", "confidence"], sorted(low, key=lambda x: x[2])))
    out = []
    for title, why, cols, rows in lists:
        out.append({"title": title, "why": why, "columns": cols, "count": len(rows),
                    "rows": [[_cell(v) for v in row] for row in rows[:100]]})
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    return v


def charts(rs: ResultSet) -> list[dict[str, Any]]:
    """Every chart as ``{id, section, title, traces, layout}`` (Plotly JSON, aggregated data)."""
    out: list[dict[str, Any]] = []

    def hist_chart(section: str, key: str, title: str, unit: str,
                   value_range: tuple[float, float] | None, rows: list[dict[str, Any]]) -> None:
        vals = _numbers(rows, key)
        if vals.size == 0:
            return
        h = histogram(vals, value_range=value_range)
        edges = h["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        width = edges[1] - edges[0]
        shown_unit = unit if unit in ("BPM", "LUFS", "LU", "dBTP", "Hz") else ""
        stats = f"{vals.size:,} tracks, median {format(float(np.median(vals)), ',.4g')} {shown_unit}".rstrip()
        if h["clipped"]:
            stats += f"; {h['clipped']:,} outside the axis, counted in the end bars"
        out.append({"id": f"chart-{key}", "section": section, "title": title, "note": stats,
                    "traces": [{"type": "bar", "x": centers, "y": h["counts"], "width": width,
                                "marker": {"color": "#4C78A8"},
                                "hovertemplate": "%{x:.3g}: %{y} tracks<extra></extra>"}],
                    "layout": {"xaxis": {"title": {"text": unit}},
                               "yaxis": {"title": {"text": "tracks"}}, "bargap": 0.05}})

    for key, title, unit, rng in RHYTHM_HISTS:
        hist_chart("Tempo and key", key, title, unit, rng, rs.tracks)
    modes: dict[str, Counter] = {"major": Counter(), "minor": Counter()}
    for r in rs.tracks:
        k, s = r.get("key"), r.get("scale")
        if isinstance(k, str) and s in modes:
            modes[s][_ENHARMONIC.get(k, k)] += 1
    if any(modes.values()):
        n_keys = sum(sum(c.values()) for c in modes.values())
        out.append({"id": "chart-key", "section": "Tempo and key", "title": "Key and mode",
                    "note": f"{n_keys:,} tracks; enharmonic spellings merged",
                    "traces": [{"type": "bar", "name": m, "x": KEYS, "y": [modes[m][k] for k in KEYS],
                                "marker": {"color": c}}
                               for m, c in (("major", "#F58518"), ("minor", "#4C78A8"))],
                    "layout": {"barmode": "stack", "yaxis": {"title": {"text": "tracks"}},
                               "legend": {"orientation": "h", "y": 1.12}}})
    for key, title, unit, rng in LOUDNESS_HISTS:
        hist_chart("Loudness", key, title, unit, rng, rs.tracks)
    stem_stats = []
    for stem in sorted({s["stem"] for s in rs.stems}):
        q = quartiles(_numbers([s for s in rs.stems if s["stem"] == stem], "lufs"))
        if q:
            stem_stats.append((stem, q))
    if stem_stats:
        out.append({"id": "chart-stem-lufs", "section": "Loudness", "title": "Loudness per stem",
                    "note": "quartiles; whiskers at 1.5 IQR; dashed line: mean",
                    "traces": [{"type": "box", "name": f"{stem} (n={q['n']:,})", "q1": [q["q1"]],
                                "median": [q["median"]], "q3": [q["q3"]],
                                "lowerfence": [q["lowerfence"]], "upperfence": [q["upperfence"]],
                                "mean": [q["mean"]], "x": [f"{stem} (n={q['n']:,})"],
                                "boxpoints": False, "boxmean": True, "showlegend": False}
                               for stem, q in stem_stats],
                    "layout": {"yaxis": {"title": {"text": "LUFS"}}}})
    for key, title, unit, rng in SPECTRAL_HISTS:
        hist_chart("Spectral descriptors", key, title, unit, rng, rs.tracks)
    for key, title, unit, rng in CLASSIFIER_HISTS:
        hist_chart("Classifier scores", key, title, unit, rng, rs.tracks)
    return out


def summary_counts(rs: ResultSet) -> dict[str, Any]:
    durations = _numbers(rs.tracks, "duration_s")
    per_analyzer = {name: {"ok": o["status"].get("ok", 0), "failed": o["status"].get("error", 0),
                           "blocked": o["status"].get("blocked", 0)}
                    for name, o in sorted(rs.outcomes.items())}
    codecs = Counter(str(r.get("codec")) for r in rs.tracks if r.get("codec"))
    rates = Counter(int(r["sample_rate"]) for r in rs.tracks if isinstance(r.get("sample_rate"), int))
    return {"tracks": len(rs.tracks), "hours": float(durations.sum()) / 3600 if durations.size else 0.0,
            "failed_tracks": sum(1 for r in rs.tracks if r.get("failed")),
            "stems": len(rs.stems), "analyzers": per_analyzer,
            "codecs": codecs.most_common(), "sample_rates": rates.most_common()}


def table_rows(rs: ResultSet, max_rows: int) -> tuple[list[str], list[str], list[list[Any]]]:
    """The track table: column keys, headers, and up to ``max_rows`` rows (sorted by track)."""
    present = {k for r in rs.tracks for k in r}
    cols = [(k, h) for k, h in TABLE_COLUMNS if k in present]
    rows = []
    for r in rs.tracks[:max_rows]:
        row = []
        for k, _ in cols:
            v = r.get(k)
            if isinstance(v, list):
                v = ", ".join(map(str, v))
            elif isinstance(v, float):
                v = round(v, 3)
            row.append(v)
        rows.append(row)
    return [k for k, _ in cols], [h for _, h in cols], rows


# -- page ----------------------------------------------------------------------------------------

def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ConfigError("the report needs plotly: pip install 'mirflow[results]' "
                          "(or pip install plotly)") from None
    return get_plotlyjs()


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def build_report(rs: ResultSet, *, max_rows: int = 5000, thresholds: Thresholds = Thresholds(),
                 title: str = "mirflow report", shown_path: str | None = None) -> str:
    """The report page as one HTML string (see the module docstring). ``shown_path`` is the
    dataset path as the user gave it (the page's subtitle); default: the absolute root."""
    plotly_js = _plotly_js()
    cols, headers, rows = table_rows(rs, max_rows)
    data = {
        "summary": summary_counts(rs), "failures": failure_groups(rs)[:100],
        "outliers": outliers(rs, thresholds), "charts": charts(rs),
        "table": {"columns": cols, "headers": headers, "rows": rows, "total": len(rs.tracks)},
        "provenance": {"mirflow_version": rs.provenance.get("mirflow_version"),
                       "dataset_root": shown_path or rs.provenance.get("dataset_root")},
    }
    page = _TEMPLATE.replace("__TITLE__", html.escape(title))
    page = page.replace("__CREATED__", html.escape(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    page = page.replace("__DATA__", _json_for_script(data))
    return page.replace("__PLOTLY__", plotly_js.replace("</script", "<\\/script"))


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --ink:#1f2933; --muted:#627d98; --line:#d9e2ec; --bg:#f5f7fa; --accent:#4C78A8; --bad:#c0392b; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); margin: 0; }
header { background: #102a43; color: #fff; padding: 18px 28px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #bcccdc; font-size: 13px; }
main { padding: 18px 28px 40px; max-width: 1500px; margin: 0 auto; }
h2 { font-size: 17px; margin: 26px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.stat { min-width: 150px; }
.stat b { display: block; font-size: 24px; font-weight: 600; }
.stat span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 12px; }
.chart-card h3 { margin: 0; font-size: 14px; font-weight: 600; } .chart-card .note { margin: 0 0 4px; }
.chart { height: 260px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f0f4f8; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#tracks th { cursor: pointer; user-select: none; }
#tracks th.asc::after { content: " \25B2"; } #tracks th.desc::after { content: " \25BC"; }
.bad { color: var(--bad); }
.muted { color: var(--muted); }
.note { color: var(--muted); font-size: 12px; margin: 6px 0; }
.two { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 12px; }
.outlier h3 { margin: 0; font-size: 14px; } .outlier .count { float: right; font-weight: 600; }
.outlier .count.zero { color: #2f855a; } .outlier .count.some { color: var(--bad); }
.outlier table { margin-top: 6px; } .scroll { max-height: 260px; overflow: auto; }
#search { padding: 6px 10px; width: 320px; border: 1px solid var(--line); border-radius: 6px; font-size: 14px; }
.pager button { margin-left: 6px; padding: 3px 10px; }
code { background: #eef2f7; padding: 1px 4px; border-radius: 3px; }
</style></head>
<body>
<header><h1>__TITLE__</h1><p id="subtitle">created __CREATED__</p></header>
<main>
<section id="counts"><h2>Counts</h2><div class="cards" id="stat-cards"></div>
  <div class="two" style="margin-top:12px"><div class="card"><table id="analyzer-counts"></table></div>
  <div class="card"><table id="formats"></table></div></div></section>
<section id="failures"><h2>Failures by reason</h2><div class="card" id="failure-list"></div></section>
<section id="distributions"></section>
<section id="outliers"><h2>Outliers</h2><div class="two" id="outlier-list"></div></section>
<section id="table"><h2>Tracks</h2>
  <p><input id="search" type="search" placeholder="search tracks, keys, failures..." aria-label="search">
  <span id="match-count" class="muted"></span><span class="pager" style="float:right">
  <span id="page-info" class="muted"></span><button id="prev">&lsaquo; prev</button><button id="next">next &rsaquo;</button></span></p>
  <p class="note" id="table-note"></p>
  <div class="card" style="padding:0"><table id="tracks"><thead></thead><tbody></tbody></table></div>
</section>
</main>
<script>__PLOTLY__</script>
<script id="report-data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("report-data").textContent);
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const fmt = v => v === null || v === undefined ? "" : (typeof v === "number"
  ? v.toLocaleString("en", {maximumFractionDigits: Math.abs(v) >= 100 ? 1 : 3}) : String(v));
function el(tag, attrs, html) { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (html !== undefined) e.innerHTML = html; return e; }
function table(node, headers, rows) {
  node.innerHTML = "<thead><tr>" + headers.map(h => "<th>" + esc(h) + "</th>").join("") + "</tr></thead><tbody>" +
    rows.map(r => "<tr>" + r.map(v => "<td" + (typeof v === "number" ? " class=num" : "") + ">" + esc(fmt(v)) + "</td>").join("") + "</tr>").join("") + "</tbody>";
}
const S = D.summary, P = D.provenance;
document.getElementById("subtitle").textContent += " · mirflow " + P.mirflow_version + " · " + P.dataset_root;
[[S.tracks.toLocaleString("en"), "tracks"], S.hours >= 1 ? [S.hours.toFixed(1), "hours of audio"] : [(S.hours * 60).toFixed(1), "minutes of audio"],
 [S.failed_tracks.toLocaleString("en"), "tracks with a failure"], [S.stems.toLocaleString("en"), "stems analysed"]]
  .forEach(([v, l]) => document.getElementById("stat-cards").appendChild(el("div", {className: "card stat"}, "<b>" + esc(v) + "</b><span>" + esc(l) + "</span>")));
table(document.getElementById("analyzer-counts"), ["analyzer", "ok", "failed", "blocked"],
  Object.entries(S.analyzers).map(([n, c]) => [n, c.ok, c.failed, c.blocked]));
table(document.getElementById("formats"), ["codec", "tracks", "sample rate Hz", "tracks"],
  Array.from({length: Math.max(S.codecs.length, S.sample_rates.length)}, (_, i) =>
    [...(S.codecs[i] || ["", ""]), ...(S.sample_rates[i] || ["", ""])]));
const fl = document.getElementById("failure-list");
if (!D.failures.length) fl.innerHTML = "<p class=muted>No failures.</p>";
else { const t = el("table"); fl.appendChild(t);
  table(t, ["tracks", "reason", "analyzers", "examples"], D.failures.map(f => [f.tracks, f.reason, f.analyzers.join(", "), f.examples.join("; ")])); }
const sections = {};
const dist = document.getElementById("distributions");
const pending = [];
D.charts.forEach(c => {
  if (!sections[c.section]) { dist.appendChild(el("h2", {}, esc(c.section))); sections[c.section] = dist.appendChild(el("div", {className: "grid"})); }
  const card = sections[c.section].appendChild(el("div", {className: "card chart-card"},
    "<h3>" + esc(c.title) + "</h3><div class=note>" + esc(c.note || "") + "</div>"));
  const div = card.appendChild(el("div", {className: "chart", id: c.id}));
  const layout = Object.assign({margin: {l: 50, r: 10, t: 10, b: 45}, font: {size: 11}, paper_bgcolor: "#fff", plot_bgcolor: "#fff"}, c.layout);
  pending.push(Plotly.newPlot(div, c.traces, layout, {displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"]}).then(() => { div.dataset.rendered = "1"; }));
});
if (!D.charts.length) dist.appendChild(el("p", {className: "muted"}, "No features to plot yet: run <code>mirflow run</code> first."));
const ol = document.getElementById("outlier-list");
D.outliers.forEach(o => {
  const card = ol.appendChild(el("div", {className: "card outlier"},
    "<h3>" + esc(o.title) + "<span class='count " + (o.count ? "some" : "zero") + "'>" + o.count.toLocaleString("en") + "</span></h3><div class=note>" + esc(o.why) + "</div>"));
  if (o.rows.length) { const wrap = card.appendChild(el("div", {className: "scroll"})); const t = wrap.appendChild(el("table")); table(t, o.columns, o.rows);
    if (o.count > o.rows.length) card.appendChild(el("div", {className: "note"}, "first " + o.rows.length + " of " + o.count.toLocaleString("en"))); }
});
// the track table: search, sort, pages
const T = D.table, PAGE = 50;
let view = T.rows.map((r, i) => i), sortCol = -1, sortDir = 1, page = 0;
const thead = document.querySelector("#tracks thead"), tbody = document.querySelector("#tracks tbody");
thead.innerHTML = "<tr>" + T.headers.map((h, i) => "<th data-col=" + i + ">" + esc(h) + "</th>").join("") + "</tr>";
// search text: plain String(), not the locale formatting of the cells (60,000 toLocaleString calls
// for a full table take seconds)
const text = T.rows.map(r => r.map(v => v === null ? "" : String(v)).join(" ").toLowerCase());
document.getElementById("table-note").textContent = T.rows.length < T.total
  ? "Showing the first " + T.rows.length.toLocaleString("en") + " of " + T.total.toLocaleString("en") + " tracks (by folder name); `mirflow export` writes them all."
  : T.total.toLocaleString("en") + " tracks. Click a column to sort.";
function render() {
  const pages = Math.max(1, Math.ceil(view.length / PAGE)); page = Math.min(page, pages - 1);
  tbody.innerHTML = view.slice(page * PAGE, page * PAGE + PAGE).map(i => "<tr>" + T.rows[i].map(v =>
    "<td" + (typeof v === "number" ? " class=num" : "") + ">" + esc(fmt(v)) + "</td>").join("") + "</tr>").join("");
  document.getElementById("match-count").textContent = view.length.toLocaleString("en") + " shown";
  document.getElementById("page-info").textContent = "page " + (page + 1) + " of " + pages;
}
function apply() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  view = T.rows.map((r, i) => i).filter(i => !q || text[i].includes(q));
  if (sortCol >= 0) view.sort((a, b) => { const x = T.rows[a][sortCol], y = T.rows[b][sortCol];
    if (x === null || x === "") return 1; if (y === null || y === "") return -1;
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * sortDir; });
  page = 0; render();
}
thead.addEventListener("click", e => { const th = e.target.closest("th"); if (!th) return; const c = +th.dataset.col;
  sortDir = c === sortCol ? -sortDir : 1; sortCol = c;
  thead.querySelectorAll("th").forEach(h => h.className = ""); th.className = sortDir > 0 ? "asc" : "desc"; apply(); });
document.getElementById("search").addEventListener("input", apply);
document.getElementById("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
document.getElementById("next").addEventListener("click", () => { page += 1; render(); });
apply();
Promise.all(pending).then(() => { document.body.dataset.ready = "1"; });
</script>
</body></html>
"""

__all__ = ["Thresholds", "build_report", "charts", "failure_groups", "histogram", "outliers",
           "quartiles", "write_report"]
