"""Demucs models: the published catalogue, where weights are on this machine, checks and loading.

The catalogue is Demucs' own packaged data: ``demucs/remote/files.txt`` lists every published
weight file (``<signature>-<sha256 prefix>.th``, under ``https://dl.fbaipublicfiles.com/demucs/``) and
``demucs/remote/<name>.yaml`` the signatures each named model (a "bag") is made of. These are read
as data files, without importing Demucs or PyTorch, so planning a run and ``mirflow models list``
stay cheap.

Weights are looked up, in this order (:func:`locate`):

1. a local Demucs repository passed as ``repo`` (``--sep-repo``: ``<name>.yaml`` plus ``.th`` files);
   when one is given nothing else is searched;
2. mirflow's models folders (``--models-dir``, ``$MIRFLOW_MODELS``, ``~/.cache/mirflow/models``):
   ``.th`` files placed there, bags from a ``<name>.yaml`` there or Demucs' packaged one;
3. the ``torch.hub`` checkpoint cache where Demucs' legacy download path keeps ``.th`` files
   (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``);
4. the Hugging Face hub cache where Demucs 4.1 downloads ``<signature>.safetensors`` files
   (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``).

Checks: the part after the dash in a ``.th`` name is the first 8 hex digits of the file's SHA-256
(Demucs' ``repo.check_checksum`` and ``torch.hub`` check exactly that); Hugging Face cache blobs are
named by their SHA-256 (weights) or Git blob id (YAML). :func:`check_file` verifies either, and
:func:`load` loads through Demucs' own repository classes (which check the ``.th`` prefix again) or,
for the Hugging Face cache, checks the blobs first and then uses Demucs' safetensors loader.

Licence: Demucs' code is MIT; the pretrained weights are *not* covered by the MIT licence and are
"provided only for scientific purposes" (Demucs' author, facebookresearch/demucs#327).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.devices import Device
from ..core.errors import ModelUnavailableError
from .checksums import git_blob_sha1, is_hex, sha256_file, weight_name_parts

log = logging.getLogger(__name__)

#: Where Demucs' published ``.th`` files live (``demucs.pretrained.ROOT_URL``).
ROOT_URL = "https://dl.fbaipublicfiles.com/demucs/"
#: Hugging Face namespace Demucs 4.1 loads named models from (``demucs.hf.DEFAULT_NAMESPACE``).
HF_NAMESPACE = "adefossez"
PAGE = "https://github.com/adefossez/demucs"
LICENCE = "code MIT; weights: scientific use only"
LICENCE_NOTE = ("Demucs models (Meta AI / A. Defossez): the code is MIT-licensed; the pretrained "
                "weights are not covered by the MIT licence and are provided only for scientific "
                "purposes (facebookresearch/demucs#327).")

STANDARD_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = ("drums", "bass", "other", "vocals", "guitar", "piano")
#: Sample rate of every published Demucs model, in Hz.
MODEL_SR = 44100

#: The named models mirflow lists, with what Demucs' README says of them.
NAMED_MODELS: dict[str, str] = {
    "htdemucs": "Hybrid Transformer Demucs v4, MusDB HQ + 800 songs (Demucs' default)",
    "htdemucs_ft": "htdemucs fine-tuned, one model per source (about 4x slower)",
    "htdemucs_6s": "htdemucs with guitar and piano stems (piano is weak)",
    "hdemucs_mmi": "Hybrid Demucs v3 retrained on MusDB HQ + 800 songs",
    "mdx": "Hybrid Demucs, MusDB HQ only (MDX 2021 track A winner)",
    "mdx_extra": "Hybrid Demucs with extra training data, incl. the MusDB test set (MDX 2021 track B)",
    "mdx_q": "mdx, quantized (needs pip install diffq)",
    "mdx_extra_q": "mdx_extra, quantized (needs pip install diffq)",
}

#: Where weights were found, in lookup order.
PLACES = ("repo", "models-dir", "torch-hub", "hf-cache")


def sources_of(name: str) -> tuple[str, ...]:
    """Stem names a named model produces (six for the ``6s`` models, else the standard four)."""
    return SIX_SOURCES if "6s" in name else STANDARD_SOURCES


# -- the published catalogue (Demucs' packaged data files) -----------------------------------------
def package_dir() -> Path | None:
    """The installed ``demucs`` package folder, found without importing it (``None``: not installed)."""
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def remote_dir() -> Path | None:
    """Demucs' packaged ``remote/`` folder (``files.txt`` and the bag ``.yaml`` files)."""
    base = package_dir()
    return base / "remote" if base is not None and (base / "remote").is_dir() else None


@dataclass(frozen=True)
class WeightFile:
    """One published weight file: ``955717e8-8726e21a.th`` at ``ROOT_URL + root + name``."""

    signature: str
    name: str
    url: str

    @property
    def sha256_prefix(self) -> str | None:
        """The leading hex digits of the file's SHA-256 that its name carries."""
        return weight_name_parts(self.name)[1]


@lru_cache(maxsize=4)
def _remote_files(folder: Path) -> dict[str, WeightFile]:
    """Parse ``files.txt``: ``# comments``, ``root: <sub/folder/>`` lines and file names."""
    root = ""
    out: dict[str, WeightFile] = {}
    for raw in (folder / "files.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
            continue
        sig = weight_name_parts(line)[0]
        out[sig] = WeightFile(sig, line, ROOT_URL + root + line)
    return out


def remote_files() -> dict[str, WeightFile]:
    """``{signature: WeightFile}`` of every weight file Demucs publishes (empty without Demucs)."""
    folder = remote_dir()
    return dict(_remote_files(folder)) if folder is not None else {}


_ONE_LINE_BAG = re.compile(r"""^models:\s*\[([^\]\n]*)\]\s*$""", re.MULTILINE)


def read_bag(yaml_file: Path) -> tuple[str, ...]:
    """The signatures a Demucs bag file lists (its ``models:`` key).

    The one-line ``models: ['sig', ...]`` form that every bag Demucs ships uses is read directly
    (importing PyYAML costs start-up time in every process that plans a run); any other form is
    read with PyYAML, a dependency of Demucs.
    """
    text = Path(yaml_file).read_text(encoding="utf-8")
    m = _ONE_LINE_BAG.search(text)
    if m is not None:
        return tuple(x.strip().strip("'\"") for x in m.group(1).split(",") if x.strip())
    import yaml

    data = yaml.safe_load(text)
    return tuple(str(s) for s in (data or {}).get("models", []))


def published_bag(name: str) -> tuple[str, ...] | None:
    """Signatures of the named model ``name`` as Demucs publishes it, or ``None`` if unknown."""
    folder = remote_dir()
    if folder is None or not (folder / f"{name}.yaml").is_file():
        return None
    return read_bag(folder / f"{name}.yaml")


def published_files(name: str) -> tuple[WeightFile, ...]:
    """The published weight files of named model ``name`` (empty if unknown or Demucs is missing)."""
    files = remote_files()
    return tuple(files[s] for s in (published_bag(name) or ()) if s in files)


# -- local folders and caches -----------------------------------------------------------------------
def scan_weights(folder: Path) -> dict[str, Path]:
    """``{signature: file}`` of the ``.th`` files in ``folder``, split as ``demucs.repo.LocalRepo`` does."""
    out: dict[str, Path] = {}
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return out
    for f in entries:
        if f.suffix == ".th" and f.is_file():
            out[weight_name_parts(f.name)[0]] = f
    return out


def torch_hub_checkpoints() -> Path:
    """``torch.hub``'s checkpoint folder: ``$TORCH_HOME/hub/checkpoints`` (default
    ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``), as :func:`torch.hub.get_dir` documents it."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class Location:
    """Where the weights of one model were found.

    ``where`` is one of :data:`PLACES`; ``files`` holds one weight file per signature (``.th``, or
    ``.safetensors`` in the Hugging Face cache); ``bag`` is the YAML that lists the signatures
    (``None`` when ``name`` is itself a signature).
    """

    name: str
    where: str
    folder: Path
    signatures: tuple[str, ...]
    files: tuple[Path, ...]
    bag: Path | None = None

    @property
    def signature(self) -> str:
        """``"955717e8"``, or ``"sigA+sigB+..."`` for a bag of several models."""
        return "+".join(self.signatures)


def _signatures_in_folder(name: str, folder: Path, *, packaged: bool) -> tuple[tuple[str, ...], Path | None] | None:
    """The signatures ``name`` stands for in ``folder`` and the YAML that says so: a weight file named
    ``name`` first (as Demucs does), then ``<name>.yaml`` there, then (``packaged``) Demucs' own bag."""
    if name in scan_weights(folder):
        return (name,), None
    own = folder / f"{name}.yaml"
    if own.is_file():
        return read_bag(own), own
    if packaged:
        folder_remote = remote_dir()
        sigs = published_bag(name)
        if sigs is not None and folder_remote is not None:
            return sigs, folder_remote / f"{name}.yaml"
    return None


def _in_folder(name: str, folder: Path, where: str) -> Location | None:
    if not folder.is_dir():
        return None
    found = _signatures_in_folder(name, folder, packaged=where != "repo")
    if found is None:
        return None
    sigs, bag = found
    weights = scan_weights(folder)
    if not sigs or any(s not in weights for s in sigs):
        return None
    return Location(name, where, folder, sigs, tuple(weights[s] for s in sigs), bag)


def _in_hf_cache(name: str) -> Location | None:
    bare = name[len("hf://"):] if name.startswith("hf://") else name
    namespace, _, short = bare.rpartition("/")
    namespace = namespace or HF_NAMESPACE
    cache = hf_cache_dir()
    for bag in sorted(cache.glob(f"models--{namespace}--*/snapshots/*/{short}.yaml")):
        snap = bag.parent
        try:
            sigs = read_bag(bag)
        except (OSError, ValueError):
            continue
        files = tuple(snap / f"{s}.safetensors" for s in sigs)
        if sigs and all(f.exists() for f in files):
            return Location(name, "hf-cache", snap, sigs, files, bag)
    return None


def locate_all(name: str, *, repo: Path | None = None, dirs: Sequence[Path] = ()) -> list[Location]:
    """Every place on this machine that holds all weights of ``name``, in lookup order.

    With ``repo`` only that local repository is searched (as Demucs does with ``--repo``).
    """
    if repo is not None:
        loc = _in_folder(name, Path(repo).expanduser(), "repo")
        return [loc] if loc else []
    out: list[Location] = []
    if not name.startswith("hf://"):
        for d in dirs:
            loc = _in_folder(name, Path(d), "models-dir")
            if loc:
                out.append(loc)
        loc = _in_folder(name, torch_hub_checkpoints(), "torch-hub")
        if loc:
            out.append(loc)
    loc = _in_hf_cache(name)
    if loc:
        out.append(loc)
    return out


def locate(name: str, *, repo: Path | None = None, dirs: Sequence[Path] = ()) -> Location | None:
    """The first place that holds all weights of ``name`` (see the module docstring), or ``None``."""
    found = locate_all(name, repo=repo, dirs=dirs)
    return found[0] if found else None


def signature(name: str, *, repo: Path | None = None, dirs: Sequence[Path] = ()) -> str | None:
    """The signature(s) of model ``name`` (``"955717e8"``, or ``"sigA+sigB"`` for a bag): those of
    the weights that would be loaded, else the published bag's; ``None`` when unknown. Read from
    file names and bag files, not from the weights."""
    loc = locate(name, repo=repo, dirs=dirs)
    if loc is not None:
        return loc.signature
    if repo is not None:
        found = _signatures_in_folder(name, Path(repo).expanduser(), packaged=False) \
            if Path(repo).expanduser().is_dir() else None
        return "+".join(found[0]) if found else None
    sigs = published_bag(name)
    if sigs is not None:
        return "+".join(sigs)
    return name if is_hex(name, 8) else None


def repo_problem(name: str, repo: Path) -> str | None:
    """Why ``repo`` cannot provide ``name`` (``None`` when it can): no such folder, no bag or weight
    file of that name (with what the folder holds), or weight files the bag lists that are missing."""
    repo = Path(repo).expanduser()
    if not repo.is_dir():
        return f"folder {repo} does not exist or is not a folder"
    weights = scan_weights(repo)
    if name in weights:
        return None
    bag = repo / f"{name}.yaml"
    if not bag.is_file():
        known = sorted({f.stem for f in repo.glob("*.yaml")} | set(weights))
        return (f"model {name!r} is not in {repo} (no {name}.yaml or {name}*.th; it holds: "
                f"{', '.join(known) or 'nothing'})")
    absent = [s for s in read_bag(bag) if s not in weights]
    if absent:
        return (f"model {name!r} in {repo} lists weights that are missing: "
                f"{', '.join(s + '*.th' for s in absent)}")
    return None


def repo_models(repo: Path) -> list[str]:
    """The models a local repository offers: its bag names, then signatures no bag lists."""
    repo = Path(repo).expanduser()
    bags = sorted(f.stem for f in repo.glob("*.yaml"))
    listed = {s for b in bags for s in read_bag(repo / f"{b}.yaml")}
    return bags + sorted(s for s in scan_weights(repo) if s not in listed)


def how_to_get(name: str) -> str:
    """What a user can do to make the weights of ``name`` available offline."""
    return (f"Either pass --sep-repo DIR, a folder holding {name}.yaml and the .th weight files it "
            f"lists, or copy the .th files (e.g. from ~/.cache/torch/hub/checkpoints of a machine where "
            f"Demucs ran) into a mirflow models folder (--models-dir, $MIRFLOW_MODELS or "
            f"~/.cache/mirflow/models), or run once with network access so Demucs downloads and caches "
            f"them: python -c \"from demucs.pretrained import get_model; get_model('{name}')\"")


# -- checks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileCheck:
    """The state of one weight file: ``ok``, ``changed`` (content does not match its address or
    the published file) or ``unrecorded`` (no checksum known)."""

    path: Path
    status: str
    detail: str = ""


def check_file(path: Path) -> FileCheck:
    """Check a weight or bag file against the checksum its name carries.

    ``<sig>-<prefix>.th``: SHA-256 starts with ``prefix``; a file of a published signature must also
    carry the published name. Hugging Face cache files: the blob's name is the SHA-256 (64 hex) or
    the Git blob id (40 hex) of its content.
    """
    path = Path(path)
    if path.suffix == ".th":
        sig, prefix = weight_name_parts(path.name)
        published = remote_files().get(sig)
        if prefix is None:
            return FileCheck(path, "unrecorded", "no hash prefix in the file name (<signature>-<sha256 prefix>.th)")
        digest = sha256_file(path)
        if not digest.startswith(prefix):
            return FileCheck(path, "changed", f"SHA-256 {digest[:12]}..., file name says {prefix}...")
        if published is not None and published.name != path.name:
            return FileCheck(path, "changed", f"not the published file for signature {sig} "
                                              f"(published: {published.name})")
        return FileCheck(path, "ok", f"SHA-256 starts with {prefix}")
    blob = path.resolve()  # the Hugging Face cache names LFS blobs by SHA-256, Git blobs by SHA-1
    for hex_len, digest_of, what in ((64, sha256_file, "SHA-256"), (40, git_blob_sha1, "Git blob id")):
        if is_hex(blob.name, hex_len):
            digest = digest_of(blob)
            ok = digest == blob.name
            return FileCheck(path, "ok" if ok else "changed",
                             f"{what} matches the Hugging Face blob name" if ok
                             else f"{what} {digest[:12]}..., blob name {blob.name[:12]}...")
    return FileCheck(path, "unrecorded", "no checksum known for this file")


def check_location(loc: Location) -> list[FileCheck]:
    """:func:`check_file` for every weight file of ``loc`` (and the bag file in the Hugging Face cache)."""
    files = list(loc.files)
    if loc.where == "hf-cache" and loc.bag is not None:
        files.insert(0, loc.bag)
    return [check_file(f) for f in files]


# -- loading (imports torch and demucs) --------------------------------------------------------------
def load(name: str, *, repo: Path | None = None, dirs: Sequence[Path] = ()) -> Any:
    """Load model ``name`` in eval mode on the CPU from where :func:`locate` finds it.

    A local repo goes through :func:`demucs.pretrained.get_model` (which checks each ``.th`` file's
    hash prefix); models folders and the torch hub cache through Demucs' ``LocalRepo`` and
    ``BagOnlyRepo`` (same check, no network); the Hugging Face cache after :func:`check_file` on each
    file, through ``demucs.hf.load_safetensors_model``. Weights found nowhere are left to
    ``get_model``, which downloads them when the network allows.

    Raises :class:`ModelUnavailableError` with the reason and :func:`how_to_get`.
    """
    from demucs import pretrained
    from demucs.repo import AnyModelRepo, BagOnlyRepo, LocalRepo, ModelLoadingError

    if repo is not None:
        repo = Path(repo).expanduser()
        problem = repo_problem(name, repo) if name != "demucs_unittest" else None
        if problem:  # demucs itself would sys.exit() on a missing folder
            raise ModelUnavailableError(f"separation model {problem}. " + how_to_get(name))
    loc = None if repo is not None else locate(name, dirs=dirs)
    try:
        if repo is not None or loc is None:
            model = pretrained.get_model(name, repo=repo)
        elif loc.where == "hf-cache":
            bad = [c for c in check_location(loc) if c.status == "changed"]
            if bad:
                raise ModelLoadingError("; ".join(f"{c.path}: {c.detail}" for c in bad))
            model = _load_hf(loc)
        else:
            models = LocalRepo(loc.folder)
            bags = BagOnlyRepo(loc.bag.parent if loc.bag is not None else loc.folder, models)
            model = AnyModelRepo(models, bags).get_model(name)
            log.info("separation: %s from %s (%s)", name, loc.folder, loc.where)
    except (ModelLoadingError, OSError, ValueError, KeyError, RuntimeError) as exc:
        where = f" from {loc.folder}" if loc is not None else ""
        raise ModelUnavailableError(f"cannot load separation model {name!r}{where}: {exc}. "
                                    "`mirflow models verify` checks the cached weight files. "
                                    + how_to_get(name)) from exc
    return model.eval()


def _load_hf(loc: Location) -> Any:
    """A bag from the Hugging Face cache, assembled as ``demucs.hf.get_hf_model`` does, without the network."""
    import yaml
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model

    assert loc.bag is not None
    bag = yaml.safe_load(loc.bag.read_text(encoding="utf-8")) or {}
    models = [load_safetensors_model(f) for f in loc.files]
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def default_batch(device: Device) -> int:
    """Model segments per forward pass when the user did not say.

    CPU: 1 (a pass over several segments was slower than as many passes of one; measured in
    benchmarks/RESULTS.md). MPS: 2. CUDA/ROCm: by memory, one full-size htdemucs segment per 4 GiB,
    4..16 (a rule not yet measured on a GPU; ``--sep-batch`` overrides it).
    """
    if device.kind == "cuda":
        import torch

        total = torch.cuda.get_device_properties(device.index or 0).total_memory / 2**30
        return int(max(4, min(16, total // 4)))
    return 2 if device.kind == "mps" else 1


__all__ = ["ROOT_URL", "HF_NAMESPACE", "LICENCE", "LICENCE_NOTE", "NAMED_MODELS", "PLACES",
           "STANDARD_SOURCES", "SIX_SOURCES", "MODEL_SR", "WeightFile", "Location", "FileCheck",
           "sources_of", "package_dir", "remote_dir", "remote_files", "read_bag", "published_bag",
           "published_files", "scan_weights", "torch_hub_checkpoints", "hf_cache_dir", "locate",
           "locate_all", "signature", "repo_problem", "repo_models", "how_to_get", "check_file",
           "check_location", "load", "default_batch"]
