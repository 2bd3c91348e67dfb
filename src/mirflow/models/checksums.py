"""Content checksums of model files: SHA-256, and the content addresses upstreams publish.

Upstreams name or store their files by content, which lets mirflow check a file without a lock file:

- Demucs (and ``torch.hub``) weight files are named ``<signature>-<hash prefix>.th`` where the prefix
  is the first hex digits (8 in every published file) of the file's SHA-256: ``demucs.repo.check_checksum``
  compares ``sha256(file).hexdigest()[:len(prefix)]`` with it when loading from a local folder, and
  ``torch.hub.load_state_dict_from_url(check_hash=True)`` when downloading.
- The Hugging Face hub cache stores each file as ``blobs/<etag>``: the SHA-256 of the content for files
  kept in Git LFS (model weights), the Git blob id (SHA-1 of ``"blob <size>\\0" + content``) for
  small files kept in Git (YAML bag files).
"""

from __future__ import annotations

import hashlib
import os
import re

_HEX = re.compile(r"^[0-9a-f]+$")


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Git's object id of a file's content: SHA-1 of ``b"blob <size>\\0"`` followed by the bytes."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324 - Git's content address, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weight_name_parts(file_name: str) -> tuple[str, str | None]:
    """``("955717e8", "8726e21a")`` for ``955717e8-8726e21a.th``; ``("sig", None)`` for ``sig.th``.

    The split is Demucs' own (``demucs.repo.LocalRepo.scan``: the stem split at its last ``-``); the
    part after the dash counts as a hash prefix only when it is lowercase hex.
    """
    stem = file_name.rsplit(".", 1)[0]
    if "-" not in stem:
        return stem, None
    sig, tail = stem.rsplit("-", 1)
    return sig, (tail if tail and _HEX.match(tail) else None)


def is_hex(text: str, length: int | None = None) -> bool:
    """Whether ``text`` is lowercase hex (of ``length`` digits when given)."""
    return bool(_HEX.match(text)) and (length is None or len(text) == length)


__all__ = ["sha256_file", "git_blob_sha1", "weight_name_parts", "is_hex"]
