"""The dataset layout: discovering track folders and organising loose audio files into them.

Layout (design, section 3)::

    DATASET/<any/sub/path>/<Track Name>/full_mix.<ext>     the source audio, never modified
                                        drums.flac ...      stems written by separation
                                        <Track Name>.INFO   the JSON sidecar

A track folder is any folder holding a ``full_mix.*`` audio file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .errors import DatasetError
from .fsutil import TMP_PREFIX  # discovery ignores temporaries; re-exported for callers

log = logging.getLogger(__name__)

MIX_NAME = "full_mix"
LOCK_NAME = ".mirflow.lock"
SIDECAR_SUFFIX = ".INFO"
#: When a folder holds several ``full_mix.*`` files, the first extension in this order wins.
_MIX_PREFERENCE = ("flac", "wav", "wave", "aiff", "aif", "ogg", "opus", "mp3", "m4a")


def is_audio_file(path: Path) -> bool:
    """True for non-hidden files whose extension is a known audio extension."""
    return (not path.name.startswith(".") and path.suffix[1:].lower() in AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Track:
    """One track folder of the dataset."""

    dir: Path
    mix: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def sidecar(self) -> Path:
        """``<Track>/<Track folder name>.INFO``."""
        return self.dir / f"{self.dir.name}{SIDECAR_SUFFIX}"

    @property
    def lock_path(self) -> Path:
        return self.dir / LOCK_NAME

    def relpath(self, root: Path) -> str:
        """The folder path relative to the dataset root, with ``/`` separators."""
        try:
            return self.dir.relative_to(root).as_posix()
        except ValueError:
            return self.dir.as_posix()

    def stem_files(self) -> dict[str, Path]:
        """Audio files next to the mix other than the mix itself, by stem name (``drums``, ...)."""
        return stem_files(self.dir)


def stem_files(track_dir: Path) -> dict[str, Path]:
    """Audio files in ``track_dir`` other than the mix, by stem name (``drums``, ...), sorted."""
    stems: dict[str, Path] = {}
    try:
        entries = sorted(track_dir.iterdir())
    except OSError:
        return stems
    for p in entries:
        if p.is_file() and is_audio_file(p) and p.stem != MIX_NAME:
            stems.setdefault(p.stem, p)
    return stems


def _pick_mix(candidates: list[Path]) -> Path:
    def rank(p: Path) -> tuple[int, str]:
        ext = p.suffix[1:].lower()
        return (_MIX_PREFERENCE.index(ext) if ext in _MIX_PREFERENCE else len(_MIX_PREFERENCE), p.name)

    chosen = min(candidates, key=rank)
    if len(candidates) > 1:
        log.warning("%s holds several mixes (%s); using %s", chosen.parent,
                    ", ".join(p.name for p in candidates), chosen.name)
    return chosen


def iter_tracks(root: str | os.PathLike[str]) -> Iterator[Track]:
    """Yield every track folder under ``root`` (sorted, depth-first).

    Symlinked folders are followed once (a loop cannot hang the walk); hidden folders and
    mirflow's temporary files are ignored.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            dirnames[:] = []
            continue
        seen.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        mixes = [Path(dirpath, f) for f in filenames
                 if Path(f).stem == MIX_NAME and is_audio_file(Path(f))]
        if mixes:
            yield Track(Path(dirpath), _pick_mix(mixes))


def discover(root: str | os.PathLike[str]) -> list[Track]:
    """All track folders under ``root``, sorted by path."""
    return sorted(iter_tracks(root), key=lambda t: t.dir.as_posix())


# -- organize ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrganizeAction:
    """What organize did (or, in a dry run, would do) with one source file."""

    source: Path
    target: Path
    action: str  # "link" | "copy" | "move" | "exists"


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        import filecmp

        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _target_for(src_file: Path, src_root: Path, dest: Path, taken: set[Path]) -> tuple[Path, bool]:
    """Choose ``DEST/<rel parent>/<name>[ (n)]/full_mix.<ext>``; returns (target, already_there)."""
    rel_parent = src_file.parent.relative_to(src_root)
    base = src_file.stem
    if src_file.stem == MIX_NAME and src_file.parent != src_root:  # already a track folder
        rel_parent, base = rel_parent.parent, src_file.parent.name
    ext = src_file.suffix.lower()
    n = 1
    while True:
        folder = dest / rel_parent / (base if n == 1 else f"{base} ({n})")
        target = folder / f"{MIX_NAME}{ext}"
        existing = [p for p in folder.glob(f"{MIX_NAME}.*")] if folder.is_dir() else []
        if target not in taken and not existing:
            return target, False
        if target in existing and _same_file(src_file, target):
            return target, True
        n += 1


def organize(src: str | os.PathLike[str], dest: str | os.PathLike[str], *, mode: str = "link",
             dry_run: bool = False) -> list[OrganizeAction]:
    """Turn loose audio files under ``src`` into the dataset layout under ``dest``.

    Each ``name.ext`` becomes ``dest/<same sub path>/<name>/full_mix.ext``. ``mode`` is ``link``
    (a hard link where the file system allows it, else a copy), ``copy`` or ``move``. Existing
    files are never overwritten: a name collision gets a ``" (2)"``, ``" (3)"``... suffix, and a
    source already organised (same content) is reported as ``exists``. Source files are never
    changed unless ``mode="move"``.
    """
    if mode not in ("link", "copy", "move"):
        raise DatasetError(f"unknown organize mode {mode!r} (link, copy or move)")
    src_root, dest_root = Path(src).resolve(), Path(dest).resolve()
    if not src_root.is_dir():
        raise DatasetError(f"source folder {src} does not exist or is not a folder")
    if dest_root == src_root or src_root in dest_root.parents:
        raise DatasetError("DEST must not be inside SRC (organize would pick up its own output)")
    actions: list[OrganizeAction] = []
    taken: set[Path] = set()
    files = sorted(p for p in src_root.rglob("*")
                   if p.is_file() and is_audio_file(p)
                   and not any(part.startswith(".") for part in p.relative_to(src_root).parts))
    for f in files:
        target, exists = _target_for(f, src_root, dest_root, taken)
        taken.add(target)
        if exists:
            actions.append(OrganizeAction(f, target, "exists"))
            continue
        done = mode
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            done = _place(f, target, mode)
        actions.append(OrganizeAction(f, target, done))
    return actions


def _place(src: Path, target: Path, mode: str) -> str:
    """Put ``src`` at ``target`` without ever overwriting; returns what was actually done."""
    if mode == "link":
        try:
            os.link(src, target)
            return "link"
        except OSError as exc:
            log.debug("hard link %s -> %s failed (%s); copying", src, target, exc)
            mode = "copy"
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}")
    if mode == "copy":
        shutil.copy2(src, tmp)
        try:
            os.link(tmp, target)  # fails if target appeared meanwhile: never overwrite
        finally:
            tmp.unlink(missing_ok=True)
        return "copy"
    # move: rename when on the same file system, else copy then delete the source
    if target.exists():
        raise DatasetError(f"refusing to overwrite {target}")
    shutil.move(str(src), str(target))
    return "move"
