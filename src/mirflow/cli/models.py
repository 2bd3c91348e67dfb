"""``mirflow models list | download NAME.. | verify | convert NAME..``: a thin layer over :mod:`mirflow.models`.

Exit codes: 0 success; 1 a download, conversion or verification failed; 2 usage error (unknown
model name, missing tf2onnx).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from ..models import registry
from ..core.errors import ConfigError, MirflowError, ModelUnavailableError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = Console(stderr=True)
out = Console()

_models_dir_opt = click.option(
    "--models-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Models folder (default: $MIRFLOW_MODELS, else ~/.cache/mirflow/models).")


def _names(names: tuple[str, ...]) -> list[str]:
    try:
        for n in names:
            registry.get(n)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_USAGE)
    return list(names)


@click.group("models")
def models() -> None:
    """Manage the classifier models (Essentia VGGish family, CC BY-NC-SA 4.0)."""


@models.command("list")
@_models_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(models_dir: Path | None, as_json: bool) -> None:
    """List the known models and what of each is installed."""
    rows = registry.list_models(models_dir=models_dir)
    if as_json:
        click.echo(json.dumps({
            "search_dirs": [str(d) for d in registry.search_dirs(models_dir)],
            "licence": registry.LICENCE, "licence_note": registry.LICENCE_NOTE,
            "models": [r.to_dict() for r in rows]}, indent=2))
        return
    table = Table(title="mirflow models", caption=registry.LICENCE_NOTE)
    table.add_column("name", no_wrap=True)
    for col in ("role", "key", "installed", "licence"):
        table.add_column(col, overflow="fold")
    for r in rows:
        inst = ", ".join(sorted(r.installed)) or "[dim]-[/]"
        table.add_row(r.spec.name, r.spec.role, r.spec.key or "", inst, r.spec.licence)
    out.print(table)
    out.print("searched: " + ", ".join(str(d) for d in registry.search_dirs(models_dir)))


@models.command("download")
@click.argument("names", nargs=-1, required=True)
@_models_dir_opt
@click.option("--force", is_flag=True, help="Download again even if the file verifies.")
@click.option("--base-url", hidden=True, help="Replace https://essentia.upf.edu/models (mirrors).")
def download_cmd(names: tuple[str, ...], models_dir: Path | None, force: bool,
                 base_url: str | None) -> None:
    """Download models by name (resumes partial downloads; records SHA-256 in a lock file)."""
    chosen = _names(names)
    console.print(registry.LICENCE_NOTE, style="dim")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        try:
            written = registry.download(chosen, models_dir=models_dir, progress=progress,
                                        force=force, base_url=base_url)
        except MirflowError as exc:
            console.print(f"[red]error:[/] {exc}")
            sys.exit(EXIT_FAILED)
    folder = registry.primary_dir(models_dir)
    console.print(f"{len(written)} file(s) written to {folder}")


@models.command("verify")
@click.argument("names", nargs=-1)
@_models_dir_opt
@click.option("--record", "record_unrecorded", is_flag=True,
              help="Record the SHA-256 of files placed by hand (status 'unrecorded').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_cmd(names: tuple[str, ...], models_dir: Path | None, record_unrecorded: bool,
               as_json: bool) -> None:
    """Check installed model files against their recorded SHA-256 (exit 1 on any problem)."""
    chosen = _names(names) if names else None
    statuses = registry.verify(chosen, models_dir=models_dir)
    if record_unrecorded:
        for s in statuses:
            if s.status == "unrecorded" and s.path is not None:
                registry.record(s.path)
                s.status, s.detail = "ok", "recorded now"
    bad = [s for s in statuses if s.status not in ("ok", "unrecorded")]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "files": [s.to_dict() for s in statuses]}, indent=2))
    else:
        if not statuses:
            console.print("no model installed in " +
                          ", ".join(str(d) for d in registry.search_dirs(models_dir)))
        table = Table(title="model files")
        for col in ("model", "file", "status", "detail"):
            table.add_column(col)
        colour = {"ok": "green", "unrecorded": "yellow"}
        for s in statuses:
            table.add_row(s.model, s.file, f"[{colour.get(s.status, 'red')}]{s.status}[/]", s.detail)
        if statuses:
            out.print(table)
    sys.exit(EXIT_FAILED if bad else EXIT_OK)


@models.command("convert")
@click.argument("names", nargs=-1, required=True)
@_models_dir_opt
@click.option("--opset", type=click.IntRange(min=9), default=17, show_default=True)
def convert_cmd(names: tuple[str, ...], models_dir: Path | None, opset: int) -> None:
    """Convert installed .pb models to .onnx with tf2onnx (pip install tf2onnx tensorflow-cpu)."""
    chosen = _names(names)
    if not registry.tf2onnx_available():
        console.print("[red]error:[/] converting needs tf2onnx and TensorFlow: "
                      "pip install tf2onnx tensorflow-cpu")
        sys.exit(EXIT_USAGE)
    failed = False
    for name in chosen:
        try:
            with console.status(f"converting {name} ..."):
                dest = registry.convert(name, models_dir=models_dir, opset=opset)
        except (ModelUnavailableError, MirflowError) as exc:
            console.print(f"[red]error:[/] {exc}")
            failed = True
            continue
        console.print(f"{name}: wrote {dest}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


__all__ = ["models"]
