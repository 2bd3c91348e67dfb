"""The ``mirflow`` command line: parse, call the library, print. No analysis logic lives here.

Exit codes: 0 success; 1 some tracks failed; 2 usage, configuration or bad input; 130 interrupted.
Errors are mapped to exit codes and one-line messages in one place, :mod:`mirflow.cli.errors`,
which every command runs inside (no command catches mirflow's exceptions itself).
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..core import config as cfgmod
from ..run.options import build_options
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MirflowGroup
STATUS_LIST_LIMIT = 50  # failures listed by `status` before it refers to --json
log = logging.getLogger(__name__)

console = Console(stderr=True)
out = Console()

#: Convenience flags mapped to analyzer parameters (``--set ANALYZER.PARAM=V`` reaches the rest).
PARAM_FLAGS: dict[str, tuple[str, str]] = {
    "sep_model": ("separation", "model"),
    "sep_repo": ("separation", "repo"),
    "sep_shifts": ("separation", "shifts"),
    "sep_overlap": ("separation", "overlap"),
    "sep_segment": ("separation", "segment"),
    "sep_precision": ("separation", "precision"),
    "sep_batch": ("separation", "batch"),
    "stem_format": ("separation", "stem_format"),
    "stem_bits": ("separation", "stem_bits"),
    "classifier_backend": ("classifiers", "backend"),
    "classifier_batch": ("classifiers", "batch"),
    "classifier_series": ("classifiers", "series"),
    "models_dir": ("classifiers", "models_dir"),
    "stem_analyzers": ("stems", "analyzers"),
}


@click.group(cls=MirflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mirflow")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v mirflow's info messages, -vv its debug messages.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Also append every mirflow log message (debug and up, timestamped) to FILE.")
def main(verbose: int, log_file: Path | None) -> None:
    """Analyse music collections at dataset scale: stems, loudness, rhythm, harmony, spectral
    descriptors and classifier scores, written next to each track and exportable as one table."""
    from .logs import setup_logging

    setup_logging(verbose, log_file)
    # at exit, skip the garbage collector's passes over every object the libraries allocated
    # (0.2-0.4 s of interpreter shutdown); registered once however often main runs (tests)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _collect_params(kwargs: dict[str, Any], sets: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    params = cfgmod.parse_set(sets)
    for flag, (analyzer, param) in PARAM_FLAGS.items():
        value = kwargs.get(flag)
        if value is None:
            continue
        if flag == "stem_analyzers":
            value = cfgmod.parse_names(value)
        elif flag in ("sep_repo", "models_dir"):
            value = str(Path(value).expanduser().resolve())
        params.setdefault(analyzer, {})[param] = value
        if flag == "models_dir":  # one models folder for the classifiers and the Demucs weights
            params.setdefault("separation", {})["models_dir"] = value
    return params


def _options(dataset: Path, config: Path | None, **kw: Any):
    cfg = cfgmod.load(cfgmod.find_config(dataset, config))
    return build_options(cfg, **kw)


_dataset_arg = click.argument("dataset", type=click.Path(path_type=Path, file_okay=False, exists=True))
CORES_HELP = ("CPU cores the local workers share (default: one per worker). With fewer workers "
              "than cores, e.g. -j 1 --cores 8, each worker runs on several cores: less memory "
              "(one model copy per worker), most of the speed.")


@main.command()
@_dataset_arg
@click.option("--analyzers", "-a", help="Comma-separated analyzers (default: all; see `mirflow analyzers`).")
@click.option("--workers", "-j", type=click.IntRange(min=0), help="Worker processes (default: cores).")
@click.option("--cores", type=click.IntRange(min=1), help=CORES_HELP)
@click.option("--executor", type=click.Choice(["serial", "local", "ray"]), help="Where to run (default: local).")
@click.option("--device", help="auto | cpu | cuda | cuda:N | mps (GPU analyzers).")
@click.option("--force", help="Recompute these analyzers (comma-separated, or 'all').")
@click.option("--retry-failed", is_flag=True, help="Retry tracks that failed before.")
@click.option("--chunk", type=click.IntRange(min=0), help="Tracks per work unit (batching); 0 = auto.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="Configuration file (default: DATASET/mirflow.toml or ./mirflow.toml).")
@click.option("--set", "sets", multiple=True, metavar="ANALYZER.PARAM=VALUE", help="Set an analyzer parameter (repeatable).")
@click.option("--ray-address", help="Ray cluster address for --executor ray (e.g. auto).")
@click.option("--track-timeout", type=click.FloatRange(min=0), help="Seconds a track may take before its worker is replaced and the track failed (default: max(600, 10 x its duration)).")
@click.option("--max-memory", metavar="SIZE", help="Memory budget of the tracks in flight, e.g. 16G (default: 80 percent of RAM); a track that cannot fit is failed.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Analyse at most N of the due tracks, spread evenly over the dataset; the rest "
                   "stays due (a sample that measures this machine's rates for `mirflow plan`).")
@click.option("--strict", is_flag=True, help="Exit 1 when an analyzer of the run is unavailable here.")
@click.option("--sep-model", help="Demucs model name or signature (default htdemucs).")
@click.option("--sep-repo", type=click.Path(file_okay=False), help="Local Demucs model folder (offline).")
@click.option("--sep-shifts", type=click.IntRange(min=0), help="Random shifts (default 0: deterministic).")
@click.option("--sep-overlap", type=click.FloatRange(0, 0.99), help="Segment overlap (default 0.25).")
@click.option("--sep-segment", type=float, help="Segment length in seconds (default: the model's).")
@click.option("--sep-precision", type=click.Choice(["fp32", "fp16", "bf16"]), help="Separation precision.")
@click.option("--sep-batch", type=click.IntRange(min=1), help="Segments per forward pass.")
@click.option("--stem-format", type=click.Choice(["flac", "wav"]), help="Stem file format.")
@click.option("--stem-bits", type=click.Choice(["16", "24"]), callback=lambda c, p, v: int(v) if v else None, help="Stem bit depth.")
@click.option("--stem-analyzers", help="Analyzers run on each stem (default loudness,spectral).")
@click.option("--classifier-backend", type=click.Choice(["auto", "onnx", "essentia"]), help="Classifier runtime.")
@click.option("--classifier-batch", type=click.IntRange(min=1), help="Patches per inference call (default 64).")
@click.option("--classifier-series", is_flag=True, default=None, help="Also store per-patch classifier series.")
@click.option("--models-dir", type=click.Path(file_okay=False), help="Models folder (classifiers, Demucs weights).")
@click.option("--save-config", is_flag=True,
              help="Keep the --set and flag parameters in DATASET/mirflow.toml (or --config FILE).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary instead of the table.")
def run(dataset: Path, analyzers: str | None, workers: int | None, cores: int | None,
        executor: str | None, device: str | None, force: str | None, retry_failed: bool,
        chunk: int | None, config: Path | None, sets: tuple[str, ...], ray_address: str | None,
        as_json: bool, save_config: bool, **param_flags: Any) -> None:
    """Analyse every track of DATASET that has something due (resumable, safe to run twice)."""
    from .progress import RunProgress
    from ..run.coordinator import run as run_dataset

    track_timeout, max_memory = param_flags.pop("track_timeout"), param_flags.pop("max_memory")
    strict, limit = param_flags.pop("strict"), param_flags.pop("limit")
    options = _options(dataset, config, analyzers=cfgmod.parse_names(analyzers),
                       workers=workers, cores=cores, executor=executor, device=device,
                       force=cfgmod.parse_names(force), retry_failed=retry_failed, chunk=chunk,
                       ray_address=ray_address, params=_collect_params(param_flags, sets),
                       track_timeout=track_timeout, max_memory=max_memory, limit=limit)
    _keep_or_warn(dataset, config, _collect_params(param_flags, sets), save=save_config)
    with RunProgress(console, enabled=not as_json and console.is_terminal,
                     log_lines=not as_json and not console.is_terminal) as prog:
        summary = run_dataset(dataset, options, progress=_unavailable_in_summary(prog.callback))
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
    else:
        _print_run_summary(summary, named=_named(options))
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if strict and summary.unavailable:
        console.print(f"[red]--strict:[/] not available here: {escape(', '.join(summary.unavailable))}",
                      highlight=False)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)


def _keep_or_warn(dataset: Path, config: Path | None, given: dict[str, dict[str, Any]], *,
                  save: bool) -> None:
    """--save-config: write the command-line parameters into the configuration file; otherwise
    warn about those a plain `mirflow run` would revert (recomputing with the old values)."""
    from ..run.config_save import reverted_by_plain_run, save_params

    path = cfgmod.find_config(dataset, config) or dataset / cfgmod.CONFIG_NAME
    if save and given:
        save_params(path, given)
        console.print(f"saved {', '.join(f'{a}.{p}' for a, v in given.items() for p in v)} "
                      f"in {escape(str(path))}", highlight=False, soft_wrap=True)
        return
    reverted = reverted_by_plain_run(cfgmod.load(cfgmod.find_config(dataset, config)), given)
    for name, changes in reverted.items():
        said = ", ".join(f"{p}={v!r}" for p, (v, _) in changes.items())
        plain = ", ".join(f"{p}={old!r}" for p, (_, old) in changes.items())
        console.print(f"[yellow]warning:[/] {escape(name)} runs with {escape(said)}, which is not in "
                      f"{escape(str(path))}: a plain `mirflow run` will recompute {escape(name)} with "
                      f"{escape(plain)}; add --save-config to keep it", highlight=False)


def _unavailable_in_summary(callback: Any) -> Any:
    """The progress callback without the plan's unavailable list (the summary explains it once);
    the plan is logged at INFO (-v) and every finished track at DEBUG (-vv)."""
    def forward(event: str, **data: Any) -> None:
        if event == "plan":
            log.info("plan: %d tracks, %d with work due%s", data.get("tracks", 0), data.get("due", 0),
                     f"; not available here: {', '.join(data['unavailable'])}"
                     if data.get("unavailable") else "")
            data = {**data, "unavailable": {}}
        elif event == "track":
            log.debug("track %s %s", data.get("track"),
                      "failed" if data.get("failed") else data.get("skipped") or "done")
        callback(event, **data)
    return forward


def _named(options: Any) -> frozenset[str]:
    """Analyzers the user chose (``-a`` or ``run.analyzers``), not the default "all"."""
    from ..run.options import default_analyzers

    return frozenset(options.analyzers) if options.analyzers != default_analyzers() else frozenset()


def _print_unavailable(con: Console, unavailable: dict[str, str], named: frozenset[str]) -> None:
    """Explain in full the unavailable analyzers the user asked for; name the others on one line
    (a default run does not repeat every missing model's instructions each time)."""
    for name, reason in unavailable.items():
        if name in named:
            con.print(f"[yellow]{escape(name)} unavailable:[/] {escape(reason)}", highlight=False)
    others = [n for n in unavailable if n not in named]
    if others:
        con.print(f"not available here: {escape(', '.join(others))} (`mirflow analyzers` says why)",
                  style="dim", highlight=False)


def _print_failures(con: Console, failures: list[Any], limit: int, more: str) -> None:
    """One line per failed track: its error(s) and the analyzers that hit them."""
    by_track: dict[str, dict[str, list[str]]] = {}
    for f in failures:
        by_track.setdefault(f.track, {}).setdefault(f.error, []).append(f.analyzer)
    for track, errors in list(by_track.items())[:limit]:
        text = " | ".join(f"{escape(err)} \\[{escape(', '.join(names))}]" for err, names in errors.items())
        con.print(f"[red]failed[/] {escape(track)}: {text}", highlight=False, soft_wrap=True)
    if len(by_track) > limit:
        con.print(f"... and {len(by_track) - limit} more failed tracks ({more})", highlight=False)


def _print_run_summary(summary: Any, *, named: frozenset[str] = frozenset()) -> None:
    if summary.tracks == 0:
        console.print(f"[yellow]no tracks found in {escape(summary.dataset)}[/] (a track is a folder "
                      "holding full_mix.<ext>; see `mirflow organize`)")
    table = Table(title=f"mirflow run: {summary.tracks} tracks, {summary.wall_seconds:.1f} s",
                  box=box.SIMPLE_HEAD)
    for col in ("analyzer", "done", "skipped", "locked", "failed", "blocked", "n/a", "s/track"):
        table.add_column(col, justify="left" if col == "analyzer" else "right")
    for name in summary.analyzers:
        c = summary.counts[name]
        per = summary.seconds.get(name, 0.0) / c["done"] if c["done"] else 0.0
        table.add_row(name, str(c["done"]), str(c["skipped"]), str(c["locked"]),
                      str(c["failed"] + c["previously_failed"]), str(c["blocked"]),
                      str(c["unavailable"]), f"{per:.3f}" if c["done"] else "")
    out.print(table)
    from .estimates import print_timing

    print_timing(out, summary.timing)
    _print_unavailable(console, summary.unavailable, named)
    _print_failures(console, summary.failures, 20, "see `mirflow status`")
    for q in summary.quarantined:
        console.print(f"[yellow]corrupt sidecar kept aside as[/] {escape(str(q))}", highlight=False)
    locked = sum(c["locked"] for c in summary.counts.values())
    if summary.tracks_processed == 0 and not locked and not summary.interrupted and summary.tracks:
        # blocked tracks (e.g. no stems) and earlier failures are not work: nothing was due
        console.print("[green]nothing to do: every track is up to date[/]")
    if summary.held_back:
        console.print(f"--limit: {summary.held_back} due track(s) left for later runs; "
                      "`mirflow plan` now estimates them from the rates this run measured",
                      highlight=False)
    if summary.interrupted:
        console.print("[yellow]interrupted: run the same command again to resume[/]"
                      + (" (without --force, or forced work is redone)" if summary.forced else ""))


@main.command()
@_dataset_arg
@click.option("--analyzers", "-a", help="Comma-separated analyzers (default: all).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="ANALYZER.PARAM=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(dataset: Path, analyzers: str | None, config: Path | None, sets: tuple[str, ...],
           as_json: bool) -> None:
    """Per analyzer: tracks done / due / failed / blocked / unavailable, and why tracks failed."""
    from ..run.coordinator import status as dataset_status

    options = _options(dataset, config, analyzers=cfgmod.parse_names(analyzers),
                       params=cfgmod.parse_set(sets), resolve_device=False)
    st = dataset_status(dataset, options)
    if as_json:
        out.print_json(json.dumps(st.as_dict()))
        return
    table = Table(title=f"{st.dataset}: {st.tracks} tracks")
    for col in ("analyzer", "done", "due", "failed", "blocked", "unavailable"):
        table.add_column(col, justify="left" if col == "analyzer" else "right")
    for name in st.analyzers:
        c = st.counts[name]
        table.add_row(name, *(str(c[k]) for k in ("done", "due", "failed", "blocked", "unavailable")))
    out.print(table)
    _print_unavailable(out, st.unavailable, _named(options))
    due = Counter({(name, reason): n for name, c in st.due_reasons.items() for reason, n in c.items()})
    for (analyzer, reason), n in due.most_common(STATUS_LIST_LIMIT):
        out.print(f"[cyan]due[/] {n} track(s) \\[{escape(analyzer)}]: {escape(reason)}", highlight=False)
    _print_failures(out, st.failures, STATUS_LIST_LIMIT, "`mirflow status --json` lists them all")
    reasons = Counter((f.analyzer, f.error) for f in st.blocked)
    for (analyzer, reason), n in reasons.most_common():
        out.print(f"[yellow]blocked[/] {n} track(s) \\[{analyzer}]: {escape(reason)}", highlight=False)


@main.command()
@_dataset_arg
@click.option("--analyzers", "-a", help="Comma-separated analyzers (default: all).")
@click.option("--workers", "-j", type=click.IntRange(min=0),
              help="Workers the run would use (default: cores; with ray, give the cluster's CPUs).")
@click.option("--cores", type=click.IntRange(min=1), help=CORES_HELP)
@click.option("--max-memory", metavar="SIZE",
              help="The run's memory budget (default: 80 percent of RAM): it bounds the workers "
                   "that hold model copies.")
@click.option("--executor", type=click.Choice(["serial", "local", "ray"]),
              help="The executor the run would use (default: local): start-ups and the "
                   "coordinator's cost are measured per executor.")
@click.option("--device", help="auto | cpu | cuda | cuda:N | mps (GPU analyzers).")
@click.option("--force", help="Plan these analyzers as forced (comma-separated, or 'all').")
@click.option("--retry-failed", is_flag=True, help="Plan tracks that failed before as due.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="ANALYZER.PARAM=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every due pair).")
def plan(dataset: Path, analyzers: str | None, workers: int | None, cores: int | None,
         max_memory: str | None, executor: str | None, device: str | None, force: str | None,
         retry_failed: bool, config: Path | None, sets: tuple[str, ...], as_json: bool) -> None:
    """What `mirflow run` would do on DATASET, why, and an ETA from this machine's measured rates."""
    from ..run.forecast import plan as plan_dataset
    from .estimates import print_plan

    options = _options(dataset, config, analyzers=cfgmod.parse_names(analyzers), workers=workers,
                       cores=cores, max_memory=max_memory, executor=executor, device=device,
                       force=cfgmod.parse_names(force), retry_failed=retry_failed,
                       params=cfgmod.parse_set(sets))
    report = plan_dataset(dataset, options)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        print_plan(out, report)


@main.command()
@_dataset_arg
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="FILE.parquet, FILE.csv or FILE.jsonl")
@click.option("--stems", is_flag=True, help="One row per track and stem (long format) instead of per track.")
@click.option("--no-probe", is_flag=True, help="Skip reading audio headers (duration, sample rate, channels, codec).")
def export(dataset: Path, output: Path, stems: bool, no_probe: bool) -> None:
    """Write all sidecars of DATASET as one table (one row per track, or per stem)."""
    from ..results.export import export as export_table

    n = export_table(dataset, output, stems=stems, probe=not no_probe)
    console.print(f"wrote {n} rows to {escape(str(output))}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("src", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@click.option("--mode", type=click.Choice(["link", "copy", "move"]), default="link", show_default=True,
              help="link: hard link where possible, else copy. Sources change only with move.")
@click.option("--dry-run", is_flag=True, help="Show what would happen, change nothing.")
@click.option("--json", "as_json", is_flag=True)
def organize(src: Path, dest: Path, mode: str, dry_run: bool, as_json: bool) -> None:
    """Turn loose audio files under SRC into track folders under DEST (DEST/<name>/full_mix.<ext>)."""
    from ..core.dataset import organize as organize_files

    actions = organize_files(src, dest, mode=mode, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps([{"source": str(a.source), "target": str(a.target),
                                    "action": a.action} for a in actions]))
        return
    for a in actions:
        out.print(f"{'would ' if dry_run and a.action != 'exists' else ''}{a.action:6} {a.source} -> {a.target}",
                  highlight=False)
    console.print(f"{len(actions)} files{' (dry run: nothing changed)' if dry_run else ''}")


@main.command(name="analyzers")
@click.option("--params", "show_params", is_flag=True,
              help="List every parameter: type, range or choices, default, meaning.")
@click.option("--markdown", is_flag=True, help="With --params: as a Markdown table (the README's).")
def list_analyzers(show_params: bool, markdown: bool) -> None:
    """List the registered analyzers, their outputs and whether they can run here."""
    from .. import analyzers as registry

    if show_params or markdown:
        from . import params as param_docs

        if markdown:
            click.echo(param_docs.markdown(), nl=False)
            return
        ptable = Table()
        for col in ("analyzer", "parameter", "allowed", "default", "meaning"):
            ptable.add_column(col, overflow="fold")
        for r in param_docs.rows():
            ptable.add_row(*(escape(r[k]) for k in ("analyzer", "parameter", "allowed", "default",
                                                    "meaning")))
        out.print(ptable)
        return
    table = Table()
    for col in ("analyzer", "version", "device", "outputs", "available"):
        table.add_column(col)
    reasons = {}
    for name in registry.available_names():
        cls = registry.get(name)
        reason = cls().unavailable_reason()
        if reason:
            reasons[name] = reason
        table.add_row(name, str(cls.version), cls.device, ", ".join(cls.outputs),
                      "yes" if reason is None else "no (see below)")
    out.print(table)
    for name, reason in reasons.items():
        out.print(f"[yellow]{name}[/]: {escape(reason)}")


@main.command()
@click.argument("dest", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--tracks", type=click.IntRange(1, 50), default=6, show_default=True)
@click.option("--seconds", type=click.FloatRange(4, 120), default=12.0, show_default=True)
@click.option("--workers", "-j", type=click.IntRange(min=0), default=0)
def demo(dest: Path | None, tracks: int, seconds: float, workers: int) -> None:
    """Synthesise a small dataset with known tempo, key and loudness, analyse it, compare."""
    from .demo import make_demo_dataset, run_demo

    dest = dest or Path("mirflow-demo")
    truths = make_demo_dataset(dest, tracks=tracks, seconds=seconds)
    console.print(f"synthesised {len(truths)} tracks in {dest}")
    from .progress import RunProgress

    with RunProgress(console, enabled=console.is_terminal) as prog:
        summary, table_rows = run_demo(dest, truths, workers=workers,
                                       progress=_unavailable_in_summary(prog.callback))
    _print_run_summary(summary)
    table = Table(title="known answers vs measured")
    for col in table_rows[0].keys() if table_rows else ():
        table.add_column(col)
    for row in table_rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)
    console.print(f"sidecars are in {escape(str(dest))}/*/*.INFO; try `mirflow status {escape(str(dest))}`, "
                  f"`mirflow export {escape(str(dest))} -o demo.csv` and "
                  f"`mirflow report {escape(str(dest))} -o demo.html`", highlight=False)
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)


def _mount_optional_groups() -> None:
    try:
        from .models import models
    except ImportError:  # the classifier module is not part of this build
        return
    main.add_command(models)


_mount_optional_groups()

from .results import listen, report  # noqa: E402 - the result commands live in their own module

main.add_command(report)
main.add_command(listen)

if __name__ == "__main__":  # pragma: no cover
    main()
