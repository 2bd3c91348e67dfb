"""The model registry: names, files, download addresses, checksums and interfaces of mirflow's models.

Each :class:`ModelSpec` carries what a caller needs to find, fetch, check and run one model: its
upstream files (``.pb`` frozen TensorFlow graph, ``.json`` metadata, optional ``.onnx``), their
official addresses, the SHA-256 where it is known, the input and output node names, the class labels
in model order, and the licence. Adding another VGGish-family classifier is one entry in
:data:`REGISTRY`.

Demucs separation models are entries of the same registry (``family="demucs"``), built from the
catalogue Demucs packages (:mod:`mirflow.models.demucs`): their files are the published
``<signature>-<sha256 prefix>.th`` weights, whose names pin the first 8 hex digits of each file's
SHA-256. Where Demucs weights are looked up (a local repo, the models folders below, the torch hub
and Hugging Face caches) and how they are checked lives in :mod:`mirflow.models.demucs`;
:func:`list_models` and :func:`verify` report them beside the Essentia models.

Model files keep their upstream names and sit directly in the models folder. Folders are searched
in this order: the ``models_dir`` argument (``--models-dir``), ``$MIRFLOW_MODELS``, then
``~/.cache/mirflow/models``; downloads go to the first of them. A lock file in that folder
(:data:`LOCK_NAME`) records each downloaded file's SHA-256 and size so that :func:`verify` detects a
changed or truncated file later.

Nothing here imports TensorFlow, Essentia or ONNX Runtime; :func:`convert` runs ``tf2onnx`` in a
child process (TensorFlow and ``essentia-tensorflow`` cannot share one process).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import (ConfigError, ConvertError, DownloadError, ModelLockError,
                           ModelUnavailableError)
from ..core.fsutil import atomic_path, atomic_write_bytes
from . import demucs as demucs_models
from .checksums import sha256_file

log = logging.getLogger(__name__)

#: Licence of the Essentia models (Music Technology Group, Universitat Pompeu Fabra).
LICENCE = "CC BY-NC-SA 4.0"
LICENCE_NOTE = ("Essentia models by the Music Technology Group (UPF), licensed CC BY-NC-SA 4.0: "
                "non-commercial use, attribution, share-alike; a proprietary licence is available "
                "from the MTG on request.")
#: Name of the lock file kept in a models folder.
LOCK_NAME = "mirflow-models.lock.json"
#: Environment variable naming the models folder.
ENV_VAR = "MIRFLOW_MODELS"

_BASE = "https://essentia.upf.edu/models"


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its upstream file name and address, and its SHA-256 when known."""

    name: str
    url: str
    sha256: str | None = None
    optional: bool = False  #: not every release ships it (e.g. ``.onnx``); a 404 is not an error
    #: leading hex digits of the SHA-256 that the upstream file name carries (Demucs ``.th`` files)
    sha256_prefix: str | None = None

    @property
    def kind(self) -> str:
        """``"pb"``, ``"onnx"``, ``"json"`` or ``"th"`` (Demucs weights)."""
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelSpec:
    """A model of the registry.

    Attributes
    ----------
    name : str
        Upstream model name, e.g. ``"danceability-vggish-audioset-1"``.
    role : {"classifier", "embedding", "head", "separation"}
        ``classifier``: VGGish patches ``[N, 96, 64]`` to class probabilities (single stage);
        ``embedding``: patches to embeddings ``[N, 128]``; ``head``: embeddings to probabilities;
        ``separation``: a Demucs model (``labels`` are its stems).
    files : tuple of ModelFile
    input, output : str
        Graph node names (TensorFlow style, without ``:0``; ``:0`` variants are accepted too).
    input_shape, output_shape : tuple of int
        ``-1`` marks the batch dimension.
    labels : tuple of str
        Class labels in model output order (empty for embeddings).
    key : str or None
        Sidecar key the classifier or head fills (``"danceability"``).
    positive : str or None
        The label whose probability is that key's score (``"danceable"``).
    embedding : str or None
        For heads: the embedding model they read.
    family : {"essentia", "demucs"}
        Which upstream the model comes from (decides where its files are looked up).
    """

    name: str
    role: str
    files: tuple[ModelFile, ...]
    input: str
    output: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    labels: tuple[str, ...] = ()
    key: str | None = None
    positive: str | None = None
    embedding: str | None = None
    description: str = ""
    licence: str = LICENCE
    page: str = "https://essentia.upf.edu/models.html"
    family: str = "essentia"

    def file(self, kind: str) -> ModelFile | None:
        """The file of ``kind`` (``"pb"``, ``"onnx"``, ``"json"``), or ``None``."""
        return next((f for f in self.files if f.kind == kind), None)

    def file_name(self, kind: str) -> str:
        return f"{self.name}.{kind}"


def _classifier(name: str, folder: str, key: str, labels: tuple[str, str], positive: str,
                description: str) -> ModelSpec:
    url = f"{_BASE}/classifiers/{folder}/{name}"
    return ModelSpec(
        name=name, role="classifier",
        files=(ModelFile(f"{name}.pb", f"{url}.pb"), ModelFile(f"{name}.json", f"{url}.json")),
        input="model/Placeholder", output="model/Sigmoid", input_shape=(-1, 96, 64),
        output_shape=(-1, 2), labels=labels, key=key, positive=positive, description=description)


def _head(name: str, folder: str, key: str, labels: tuple[str, str], positive: str,
          description: str) -> ModelSpec:
    url = f"{_BASE}/classification-heads/{folder}/{name}"
    return ModelSpec(
        name=name, role="head",
        files=(ModelFile(f"{name}.pb", f"{url}.pb"), ModelFile(f"{name}.json", f"{url}.json"),
               ModelFile(f"{name}.onnx", f"{url}.onnx", optional=True)),
        input="model/Placeholder", output="model/Softmax", input_shape=(-1, 128),
        output_shape=(-1, 2), labels=labels, key=key, positive=positive,
        embedding="audioset-vggish-3", description=description)


#: Every model mirflow knows, by name. Order: embedding, two-stage heads, single-stage classifiers.
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec(
        name="audioset-vggish-3", role="embedding",
        files=(ModelFile("audioset-vggish-3.pb", f"{_BASE}/feature-extractors/vggish/audioset-vggish-3.pb"),
               ModelFile("audioset-vggish-3.json", f"{_BASE}/feature-extractors/vggish/audioset-vggish-3.json"),
               ModelFile("audioset-vggish-3.onnx", f"{_BASE}/feature-extractors/vggish/audioset-vggish-3.onnx",
                         optional=True)),
        input="model/Placeholder", output="model/vggish/embeddings", input_shape=(-1, 96, 64),
        output_shape=(-1, 128),
        description="VGGish trained on AudioSet: 128-value embedding per 0.96 s patch"),
    _head("danceability-audioset-vggish-1", "danceability", "danceability",
          ("danceable", "not_danceable"), "danceable", "danceability head on VGGish embeddings"),
    _head("tonal_atonal-audioset-vggish-1", "tonal_atonal", "atonality", ("atonal", "tonal"),
          "atonal", "tonal/atonal head on VGGish embeddings"),
    _head("voice_instrumental-audioset-vggish-1", "voice_instrumental", "instrumentalness",
          ("instrumental", "voice"), "instrumental", "voice/instrumental head on VGGish embeddings"),
    _head("gender-audioset-vggish-1", "gender", "vocal_gender_female", ("female", "male"), "female",
          "singing-voice gender head on VGGish embeddings"),
    _classifier("danceability-vggish-audioset-1", "danceability", "danceability",
                ("danceable", "not_danceable"), "danceable", "danceability, single-stage VGGish"),
    _classifier("tonal_atonal-vggish-audioset-1", "tonal_atonal", "atonality", ("atonal", "tonal"),
                "atonal", "tonal/atonal, single-stage VGGish"),
    _classifier("voice_instrumental-vggish-audioset-1", "voice_instrumental", "instrumentalness",
                ("instrumental", "voice"), "instrumental", "voice/instrumental, single-stage VGGish"),
    _classifier("gender-vggish-audioset-1", "gender", "vocal_gender_female", ("female", "male"),
                "female", "singing-voice gender, single-stage VGGish"),
)}


def _demucs_specs() -> list[ModelSpec]:
    """Registry entries of Demucs' named models, files and hash prefixes from Demucs' packaged
    catalogue (entries without files when Demucs is not installed)."""
    specs = []
    for name, description in demucs_models.NAMED_MODELS.items():
        files = tuple(ModelFile(w.name, w.url, sha256_prefix=w.sha256_prefix)
                      for w in demucs_models.published_files(name))
        specs.append(ModelSpec(
            name=name, role="separation", files=files, input="mix", output="stems",
            input_shape=(-1, 2, -1), output_shape=(-1, len(demucs_models.sources_of(name)), 2, -1),
            labels=demucs_models.sources_of(name), description=description,
            licence=demucs_models.LICENCE, page=demucs_models.PAGE, family="demucs"))
    return specs


REGISTRY.update((s.name, s) for s in _demucs_specs())


def get(name: str) -> ModelSpec:
    """The registry entry ``name`` (raises :class:`ConfigError` naming the known models)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def classifier_keys() -> list[str]:
    """The sidecar keys the registry's classifiers and heads fill, in registry order."""
    keys: list[str] = []
    for spec in REGISTRY.values():
        if spec.key and spec.key not in keys:
            keys.append(spec.key)
    return keys


def two_stage_names(key: str) -> list[str]:
    """The embedding and head names that give ``key`` in two stages (``[]`` if none)."""
    for spec in REGISTRY.values():
        if spec.role == "head" and spec.key == key and spec.embedding:
            return [spec.embedding, spec.name]
    return []


def single_stage_name(key: str) -> str | None:
    return next((s.name for s in REGISTRY.values() if s.role == "classifier" and s.key == key), None)


def download_command(names: Iterable[str]) -> str:
    """The exact CLI command that downloads ``names``."""
    return "mirflow models download " + " ".join(names)


# -- folders and lookup ------------------------------------------------------------------------
def search_dirs(models_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for model files: ``models_dir``, ``$MIRFLOW_MODELS``, ``~/.cache/mirflow/models``."""
    dirs: list[Path] = []
    if models_dir:
        dirs.append(Path(models_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".cache" / "mirflow" / "models")
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def primary_dir(models_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder downloads and conversions write to (the first of :func:`search_dirs`)."""
    return search_dirs(models_dir)[0]


def find_file(file_name: str, models_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing ``file_name`` in the search folders, or ``None``."""
    for d in search_dirs(models_dir):
        p = d / file_name
        if p.is_file():
            return p
    return None


def find(name: str, kind: str, models_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The installed ``kind`` file (``"pb"``, ``"onnx"``, ``"json"``) of model ``name``, or ``None``."""
    return find_file(get(name).file_name(kind), models_dir)


@dataclass(frozen=True)
class Interface:
    """Input/output node names and class labels of an installed model (metadata ``.json`` wins)."""

    input: str
    output: str
    labels: tuple[str, ...]


def interface(spec: ModelSpec, models_dir: str | os.PathLike[str] | None = None) -> Interface:
    """Node names and labels of ``spec``, read from its installed ``.json`` when there is one.

    Essentia's metadata lists ``schema.inputs[].name``, ``schema.outputs[]`` (the one whose
    ``output_purpose`` is ``"predictions"`` for classifiers and heads, ``"embeddings"`` for embedding
    models) and ``classes``. Missing or unreadable metadata falls back to the registry.
    """
    path = find_file(spec.file_name("json"), models_dir)
    inp, out, labels = spec.input, spec.output, spec.labels
    if path is None:
        return Interface(inp, out, labels)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); using the registry's node names", path, exc)
        return Interface(inp, out, labels)
    schema = meta.get("schema") or {}
    inputs = [i.get("name") for i in schema.get("inputs") or [] if isinstance(i, dict) and i.get("name")]
    if inputs:
        inp = inputs[0]
    want = "embeddings" if spec.role == "embedding" else "predictions"
    outputs = [o for o in schema.get("outputs") or [] if isinstance(o, dict) and o.get("name")]
    chosen = [o["name"] for o in outputs if o.get("output_purpose") == want]
    if chosen:
        out = chosen[0]
    elif any(strip_port(o["name"]) == strip_port(spec.output) for o in outputs):
        out = spec.output
    classes = meta.get("classes")
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        labels = tuple(classes)
    return Interface(strip_port(inp), strip_port(out), labels)


def strip_port(node: str) -> str:
    """``"model/Placeholder:0"`` -> ``"model/Placeholder"`` (tf2onnx keeps TensorFlow's ``:0``)."""
    head, sep, tail = node.rpartition(":")
    return head if sep and tail.isdigit() else node


# -- checksums and the lock file ---------------------------------------------------------------
def read_lock(folder: Path) -> dict[str, dict[str, Any]]:
    """``{file name: {"sha256", "size", "url", "at", "source"}}`` from ``folder``'s lock file."""
    path = folder / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLockError(f"models lock file {path} is unreadable: {exc}; delete it and run "
                             "`mirflow models verify --record` to record the installed files again") from exc
    files = data.get("files", {}) if isinstance(data, dict) else {}
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def _update_lock(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Merge ``entries`` into the lock file, atomically, under a file lock."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / (LOCK_NAME + ".lock")), timeout=60):
        files = read_lock(folder)
        files.update(entries)
        blob = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n"
        atomic_write_bytes(folder / LOCK_NAME, blob.encode())


def _lock_entry(path: Path, *, url: str | None, source: str, sha: str | None = None) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": sha or sha256_file(path), "size": st.st_size, "url": url, "source": source,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def record(path: str | os.PathLike[str], *, url: str | None = None, source: str = "local") -> str:
    """Record ``path``'s SHA-256 in its folder's lock file (for files placed by hand); returns it."""
    path = Path(path)
    entry = _lock_entry(path, url=url, source=source)
    _update_lock(path.parent, {path.name: entry})
    return entry["sha256"]


def file_identity(path: Path) -> str:
    """A short identity of an installed model file for parameter hashes: its SHA-256 (12 hex digits).

    Taken from the lock file when the recorded size matches (cheap), else computed.
    """
    entry = read_lock(path.parent).get(path.name)
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if entry and entry.get("size") == st.st_size and entry.get("sha256"):
        return str(entry["sha256"])[:12]
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _IDENTITY_CACHE:  # unrecorded files are hashed once per process
        _IDENTITY_CACHE[key] = sha256_file(path)[:12]
    return _IDENTITY_CACHE[key]


#: (path, size, mtime_ns) -> SHA-256 prefix of model files absent from a lock file.
_IDENTITY_CACHE: dict[tuple[str, int, int], str] = {}


# -- download ------------------------------------------------------------------------------------
#: ``progress(file_name, bytes_done, bytes_total_or_None)``
ProgressFn = Callable[[str, int, "int | None"], None]


def download_file(url: str, dest: Path, *, sha256: str | None = None,
                  progress: ProgressFn | None = None, timeout: float = 60.0,
                  chunk: int = 1 << 16, sha256_prefix: str | None = None) -> str:
    """Fetch ``url`` to ``dest`` atomically, resuming a partial ``dest.part``; returns the SHA-256.

    A partial download is kept as ``<dest>.part`` and continued with an HTTP ``Range`` request on the
    next call (a server that ignores ranges gets a fresh download). The file appears under its final
    name only complete, fsync'ed and, when ``sha256`` is given, verified.

    Raises
    ------
    DownloadError
        HTTP or network failure (the ``.part`` file is kept for resuming), or a checksum mismatch
        (the ``.part`` file is deleted).
    """
    import http.client  # here: HTTP and TLS modules are no part of an analysis run's start-up
    import urllib.error
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mirflow-models"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - https/http model URLs
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file may be complete
            resp = None
        else:
            raise DownloadError(f"{dest.name}: HTTP {exc.code} {exc.reason} from {url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{dest.name}: cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
    if resp is not None:
        with resp:
            if have and resp.status == 206:
                mode, done = "ab", have
            else:
                mode, done = "wb", 0
            length = resp.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            if progress:
                progress(dest.name, done, total)
            try:
                with open(part, mode) as f:
                    while True:
                        block = resp.read(chunk)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if progress:
                            progress(dest.name, done, total)
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, reset, timeout
                raise DownloadError(f"{dest.name}: transfer interrupted after {done} bytes "
                                    f"({exc}); run the download again to resume") from exc
            if total is not None and done < total:
                raise DownloadError(f"{dest.name}: transfer interrupted after {done} of {total} bytes; "
                                    "run the download again to resume")
    digest = sha256_file(part)
    if sha256 and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: SHA-256 mismatch (expected {sha256}, got {digest}); "
                            "the partial file was removed")
    if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: SHA-256 {digest[:12]}... does not start with the "
                            f"{sha256_prefix} its name carries; the partial file was removed")
    os.replace(part, dest)
    return digest


def download(names: Iterable[str], *, models_dir: str | os.PathLike[str] | None = None,
             progress: ProgressFn | None = None, force: bool = False,
             base_url: str | None = None) -> list[Path]:
    """Download every file of the models ``names`` into :func:`primary_dir`; returns the files written.

    Files already present and matching their recorded SHA-256 are skipped unless ``force``. Optional
    files (``.onnx`` of some releases) that the server does not have are skipped. ``base_url``
    replaces the official ``https://essentia.upf.edu/models`` prefix (mirrors, tests), and
    ``https://dl.fbaipublicfiles.com/demucs`` for Demucs weights, which are checked against the
    SHA-256 prefix in their names; a models folder holding them serves Demucs offline.
    """
    folder = primary_dir(models_dir)
    written: list[Path] = []
    for name in names:
        spec = get(name)
        for mf in spec.files:
            dest = folder / mf.name
            url = mf.url if base_url is None else _rebase(mf.url, base_url)
            if dest.exists() and not force and _matches_record(dest, mf):
                log.info("%s is already installed", dest)
                continue
            try:
                digest = download_file(url, dest, sha256=mf.sha256, progress=progress,
                                       sha256_prefix=mf.sha256_prefix)
            except DownloadError as exc:
                if mf.optional and "HTTP 404" in str(exc):
                    log.info("%s: no optional %s upstream", name, mf.name)
                    continue
                raise
            _update_lock(folder, {mf.name: _lock_entry(dest, url=url, source="download", sha=digest)})
            written.append(dest)
    return written


def _rebase(url: str, base_url: str) -> str:
    """``url`` with its official prefix (Essentia's or Demucs') replaced by ``base_url``."""
    for official in (_BASE, demucs_models.ROOT_URL.rstrip("/")):
        if url.startswith(official):
            return base_url.rstrip("/") + url[len(official):]
    return url


def _matches_record(path: Path, mf: ModelFile) -> bool:
    want = mf.sha256 or read_lock(path.parent).get(path.name, {}).get("sha256")
    return bool(want) and sha256_file(path) == want


# -- verify ------------------------------------------------------------------------------------
@dataclass
class FileStatus:
    """The state of one installed model file."""

    model: str
    file: str
    path: Path | None
    status: str  #: ok | missing | changed | truncated | unrecorded
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "file": self.file, "path": str(self.path) if self.path else None,
                "status": self.status, "detail": self.detail}


def verify(names: Iterable[str] | None = None, *,
           models_dir: str | os.PathLike[str] | None = None,
           demucs_repo: str | os.PathLike[str] | None = None) -> list[FileStatus]:
    """Check installed model files against the registry SHA-256 or the one recorded at download.

    ``status``: ``ok``; ``changed`` (different SHA-256); ``truncated`` (smaller than recorded);
    ``unrecorded`` (present, but no checksum is known: placed by hand); ``missing`` (a required file
    of a model that has some files installed). Models with no file installed are left out unless named.

    Demucs models are checked wherever their weights are found (see :mod:`mirflow.models.demucs`):
    each ``.th`` file against the SHA-256 prefix its name carries and the published file name,
    Hugging Face cache files against their blob names. With ``demucs_repo`` (a local Demucs repo,
    ``--sep-repo``) every model in that folder is checked too; names may then be its models.
    """
    repo = Path(demucs_repo).expanduser() if demucs_repo else None
    repo_names = demucs_models.repo_models(repo) if repo is not None and repo.is_dir() else []
    if names is not None:
        chosen = list(names)
    else:
        chosen = list(REGISTRY) + [n for n in repo_names if n not in REGISTRY]
    out: list[FileStatus] = []
    for name in chosen:
        if name in repo_names or (name in REGISTRY and get(name).family == "demucs"):
            out.extend(_verify_demucs(name, models_dir=models_dir, repo=repo, named=names is not None))
            continue
        spec = get(name)
        found = {mf.name: find_file(mf.name, models_dir) for mf in spec.files}
        if names is None and not any(found.values()):
            continue
        for mf in spec.files:
            path = found[mf.name]
            if path is None:
                if not mf.optional:
                    out.append(FileStatus(name, mf.name, None, "missing",
                                          f"run `{download_command([name])}`"))
                continue
            entry = read_lock(path.parent).get(mf.name, {})
            want = mf.sha256 or entry.get("sha256")
            if not want:
                out.append(FileStatus(name, mf.name, path, "unrecorded",
                                      "no checksum known; `mirflow models verify --record` records it"))
                continue
            size = path.stat().st_size
            digest = sha256_file(path)
            if digest == want:
                out.append(FileStatus(name, mf.name, path, "ok"))
            elif entry.get("size") and size < int(entry["size"]):
                out.append(FileStatus(name, mf.name, path, "truncated",
                                      f"{size} bytes, {entry['size']} recorded"))
            else:
                out.append(FileStatus(name, mf.name, path, "changed",
                                      f"SHA-256 {digest[:12]}..., expected {want[:12]}..."))
    return out


def _verify_demucs(name: str, *, models_dir: str | os.PathLike[str] | None, repo: Path | None,
                   named: bool) -> list[FileStatus]:
    """:func:`verify` for one Demucs model: every place that holds its weights (the repo first)."""
    locations = demucs_models.locate_all(name, dirs=search_dirs(models_dir))
    if repo is not None:
        locations = demucs_models.locate_all(name, repo=repo) + locations
    out = []
    for loc in locations:
        for check in demucs_models.check_location(loc):
            out.append(FileStatus(name, check.path.name, check.path, check.status,
                                  f"{loc.where}: {check.detail}" if check.detail else loc.where))
    if not out and named:
        expected = [f.name for f in REGISTRY[name].files] if name in REGISTRY else [name]
        out.append(FileStatus(name, ", ".join(expected), None, "missing",
                              demucs_models.how_to_get(name)))
    return out


# -- convert -----------------------------------------------------------------------------------
def tf2onnx_available() -> bool:
    """Whether ``tf2onnx`` (and TensorFlow) can be imported here (checked without importing them)."""
    return (importlib.util.find_spec("tf2onnx") is not None
            and importlib.util.find_spec("tensorflow") is not None)


def convert(name: str, *, models_dir: str | os.PathLike[str] | None = None, opset: int = 17,
            timeout: float = 900.0) -> Path:
    """Convert model ``name``'s installed ``.pb`` into ``<name>.onnx`` beside it, with tf2onnx.

    tf2onnx runs in a child process (``python -m tf2onnx.convert``) so TensorFlow never loads into a
    mirflow worker. The ``.onnx`` is written under a temporary name and renamed; its SHA-256 goes
    to the lock file. Input and output names are those of the model's metadata (``:0`` added).

    Raises
    ------
    ModelUnavailableError
        The ``.pb`` is not installed.
    ConvertError
        tf2onnx is missing (the message gives the ``pip install`` line) or failed.
    """
    spec = get(name)
    pb = find_file(spec.file_name("pb"), models_dir)
    if pb is None:
        raise ModelUnavailableError(f"{spec.file_name('pb')} is not installed; run "
                                    f"`{download_command([name])}` first")
    if not tf2onnx_available():
        raise ConvertError("converting needs tf2onnx and TensorFlow: pip install tf2onnx tensorflow-cpu")
    iface = interface(spec, models_dir)
    dest = pb.with_name(spec.file_name("onnx"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    with atomic_path(dest) as tmp:
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--graphdef", str(pb),
               "--inputs", f"{iface.input}:0", "--outputs", f"{iface.output}:0",
               "--opset", str(opset), "--output", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise ConvertError(f"tf2onnx did not finish converting {pb.name} in {timeout:.0f} s") from exc
        if proc.returncode != 0 or not tmp.stat().st_size:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise ConvertError(f"tf2onnx failed on {pb.name} (exit {proc.returncode}):\n{tail}")
    record(dest, source=f"converted from {pb.name}")
    return dest


# -- listing -----------------------------------------------------------------------------------
@dataclass
class ModelStatus:
    """A registry entry and what of it is installed."""

    spec: ModelSpec
    #: Essentia: file kind -> path; Demucs: place (``repo``, ``models-dir``, ``torch-hub``,
    #: ``hf-cache``) -> folder holding all its weights
    installed: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        s = self.spec
        return {"name": s.name, "role": s.role, "key": s.key, "positive": s.positive,
                "labels": list(s.labels), "embedding": s.embedding, "input": s.input,
                "output": s.output, "licence": s.licence, "description": s.description,
                "family": s.family, "page": s.page,
                "files": [{"name": f.name, "url": f.url, "sha256": f.sha256, "optional": f.optional,
                           "sha256_prefix": f.sha256_prefix} for f in s.files],
                "installed": {k: str(v) for k, v in self.installed.items()}}


def list_models(*, models_dir: str | os.PathLike[str] | None = None,
                demucs_repo: str | os.PathLike[str] | None = None) -> list[ModelStatus]:
    """Every registry entry with the files of it found in the search folders (Demucs models: in
    ``demucs_repo``, the search folders, the torch hub and Hugging Face caches)."""
    out = []
    repo = Path(demucs_repo).expanduser() if demucs_repo else None
    for spec in REGISTRY.values():
        if spec.family == "demucs":
            places = demucs_models.locate_all(spec.name, dirs=search_dirs(models_dir))
            if repo is not None:
                places = demucs_models.locate_all(spec.name, repo=repo) + places
            out.append(ModelStatus(spec, {loc.where: loc.folder for loc in reversed(places)}))
            continue
        inst = {}
        for kind in ("pb", "onnx", "json"):
            p = find_file(spec.file_name(kind), models_dir)
            if p is not None:
                inst[kind] = p
        out.append(ModelStatus(spec, inst))
    return out


__all__ = ["REGISTRY", "ModelSpec", "ModelFile", "Interface", "LICENCE", "LICENCE_NOTE", "LOCK_NAME",
           "get", "search_dirs", "primary_dir", "find", "find_file", "interface", "download",
           "download_file", "verify", "convert", "record", "list_models", "classifier_keys",
           "two_stage_names", "single_stage_name", "download_command", "sha256_file",
           "file_identity", "DownloadError", "ConvertError", "FileStatus", "ModelStatus",
           "tf2onnx_available", "strip_port"]
