"""``mirflow models list | download NAME.. | verify | convert NAME..``: a thin layer over :mod:`mirflow.models`.

The registry holds the Essentia classifiers and the Demucs separation models; ``list`` and ``verify``
look for Demucs weights in ``--sep-repo``, the models folders and Demucs' own caches (torch hub,
Hugging Face).

Exit codes: 0 success; 1 a download, conversion or verification failed; 2 usage error (unknown
model name, missing tf2onnx).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from ..models import demucs as demucs_models
from ..models import registry
from ..core.errors import ConfigError, MirflowError, ModelUnavailableError
from .errors import EXIT_FAILED, EXIT_OK, MirflowGroup


console = Console(stderr=True)
out = Console()

_models_dir_opt = click.option(
    "--models-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Models folder (default: $MIRFLOW_MODELS, else ~/.cache/mirflow/models).")
_sep_repo_opt = click.option(
    "--sep-repo", "sep_repo", type=click.Path(file_okay=False, path_type=Path),
    help="A local Demucs model folder (<name>.yaml + <signature>-<sha256 prefix>.th files) to include.")


def _searched(models_dir: Path | None, sep_repo: Path | None) -> str:
    places = [str(d) for d in registry.search_dirs(models_dir)]
    demucs_places = [str(demucs_models.torch_hub_checkpoints()), str(demucs_models.hf_cache_dir())]
    if sep_repo is not None:
        demucs_places.insert(0, str(sep_repo))
    return f"searched: {', '.join(places)}; Demucs weights also in {', '.join(demucs_places)}"


def _what(spec: registry.ModelSpec) -> str:
    if spec.family == "demucs":
        return f"separation, {len(spec.labels)} stems"
    return f"{spec.role} -> {spec.key}" if spec.key else spec.role


def _names(names: tuple[str, ...], sep_repo: Path | None = None) -> list[str]:
    local = demucs_models.repo_models(sep_repo) if sep_repo is not None and sep_repo.is_dir() else []
    for n in names:
        if n not in local:
            registry.get(n)  # an unknown name is a ConfigError: exit 2 through the error map
    return list(names)


@click.group("models", cls=MirflowGroup)
def models() -> None:
    """Manage the models: Essentia VGGish classifiers (CC BY-NC-SA 4.0) and Demucs separation models."""


@models.command("list")
@_models_dir_opt
@_sep_repo_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(models_dir: Path | None, sep_repo: Path | None, as_json: bool) -> None:
    """List the known models, where each comes from, its licence and what of it is installed here."""
    rows = registry.list_models(models_dir=models_dir, demucs_repo=sep_repo)
    if as_json:
        click.echo(json.dumps({
            "search_dirs": [str(d) for d in registry.search_dirs(models_dir)],
            "demucs_caches": {"torch_hub": str(demucs_models.torch_hub_checkpoints()),
                              "hf_hub": str(demucs_models.hf_cache_dir())},
            "licence": registry.LICENCE, "licence_note": registry.LICENCE_NOTE,
            "licences": {"essentia": registry.LICENCE_NOTE, "demucs": demucs_models.LICENCE_NOTE},
            "models": [r.to_dict() for r in rows]}, indent=2))
        return
    table = Table(title="mirflow models")
    table.add_column("name", no_wrap=True)
    for col in ("what", "installed", "licence", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        inst = ", ".join(sorted(r.installed)) or "[dim]-[/]"
        table.add_row(r.spec.name, _what(r.spec), inst, r.spec.licence, r.spec.page)
    out.print(table)
    out.print(registry.LICENCE_NOTE)
    out.print(demucs_models.LICENCE_NOTE)
    out.print(_searched(models_dir, sep_repo))


@models.command("download")
@click.argument("names", nargs=-1, required=True)
@_models_dir_opt
@click.option("--force", is_flag=True, help="Download again even if the file verifies.")
@click.option("--base-url", hidden=True, help="Replace https://essentia.upf.edu/models (mirrors).")
def download_cmd(names: tuple[str, ...], models_dir: Path | None, force: bool,
                 base_url: str | None) -> None:
    """Download models by name (resumes partial downloads; records SHA-256 in a lock file)."""
    chosen = _names(names)
    families = {registry.get(n).family for n in chosen}
    if "essentia" in families:
        console.print(registry.LICENCE_NOTE, style="dim")
    if "demucs" in families:
        console.print(demucs_models.LICENCE_NOTE, style="dim")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        written = registry.download(chosen, models_dir=models_dir, progress=progress,
                                    force=force, base_url=base_url)
    folder = registry.primary_dir(models_dir)
    console.print(f"{len(written)} file(s) written to {folder}")


@models.command("verify")
@click.argument("names", nargs=-1)
@_models_dir_opt
@_sep_repo_opt
@click.option("--record", "record_unrecorded", is_flag=True,
              help="Record the SHA-256 of files placed by hand (status 'unrecorded').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_cmd(names: tuple[str, ...], models_dir: Path | None, sep_repo: Path | None,
               record_unrecorded: bool, as_json: bool) -> None:
    """Check installed model files against their SHA-256 (exit 1 on any problem).

    Essentia files: the SHA-256 recorded at download. Demucs weights (in --sep-repo, the models
    folders, the torch hub and Hugging Face caches): the SHA-256 prefix in each .th file name, the
    blob name in the Hugging Face cache.
    """
    chosen = _names(names, sep_repo) if names else None
    statuses = registry.verify(chosen, models_dir=models_dir, demucs_repo=sep_repo)
    if record_unrecorded:
        for s in statuses:
            if s.status == "unrecorded" and s.path is not None and s.path.suffix in (".pb", ".onnx", ".json"):
                registry.record(s.path)
                s.status, s.detail = "ok", "recorded now"
    bad = [s for s in statuses if s.status not in ("ok", "unrecorded")]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "files": [s.to_dict() for s in statuses]}, indent=2))
    else:
        if not statuses:
            console.print("no model installed; " + _searched(models_dir, sep_repo))
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
        raise ConfigError("converting needs tf2onnx and TensorFlow: pip install tf2onnx tensorflow-cpu")
    failed = False
    for name in chosen:
        try:
            with console.status(f"converting {name} ..."):
                dest = registry.convert(name, models_dir=models_dir, opset=opset)
        except (ModelUnavailableError, MirflowError) as exc:
            console.print(f"[red]error:[/] {escape(str(exc))}")  # keep going: convert the others
            failed = True
            continue
        console.print(f"{name}: wrote {dest}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


__all__ = ["models"]
