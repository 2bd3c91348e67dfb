"""Discovery of track folders and ``organize``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import mirflow, sine, write_track
from mirflow.core.dataset import discover, organize, stem_files
from mirflow.core.errors import DatasetError


def test_discovery_nested_hidden_tmp_and_symlink_loops(dataset: Path) -> None:
    write_track(dataset, "a", sine())
    write_track(dataset, "genre/sub/b", sine())
    write_track(dataset, ".hidden/c", sine())
    (dataset / "genre" / "loop").symlink_to(dataset, target_is_directory=True)  # a cycle
    (dataset / "a" / ".mirflow-tmp-full_mix.flac").write_bytes(b"x")
    (dataset / "notes").mkdir()
    (dataset / "notes" / "readme.txt").write_text("no audio here")
    tracks = discover(dataset)
    assert [t.relpath(dataset) for t in tracks] == ["a", "genre/sub/b"]
    assert tracks[0].sidecar == dataset / "a" / "a.INFO"


def test_several_mixes_in_one_folder_prefer_lossless(dataset: Path) -> None:
    write_track(dataset, "x", sine(), ext="ogg")
    write_track(dataset, "x", sine(), ext="flac")
    assert discover(dataset)[0].mix.name == "full_mix.flac"


def test_stem_files(dataset: Path) -> None:
    mix = write_track(dataset, "t", sine())
    for stem in ("drums", "bass"):
        write_track(dataset, "t", sine()).rename(mix.parent / f"{stem}.flac")
    write_track(dataset, "t", sine())
    (mix.parent / ".mirflow-tmp-vocals.flac").write_bytes(b"x")
    assert list(stem_files(mix.parent)) == ["bass", "drums"]


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")


@pytest.fixture
def loose(tmp_path: Path) -> Path:
    src = tmp_path / "loose"
    (src / "album").mkdir(parents=True)
    for rel in ("one.wav", "album/two.flac", "album/one.wav"):
        p = src / rel
        import soundfile as sf

        sf.write(p, sine(seconds=0.1).T, 44100)
    (src / "cover.jpg").write_bytes(b"jpeg")
    return src


def test_organize_link_is_idempotent_and_never_overwrites(loose: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    before = {p: p.stat().st_mtime_ns for p in loose.rglob("*")}
    actions = organize(loose, dest, mode="link")
    assert sorted(a.target.relative_to(dest).as_posix() for a in actions) == [
        "album/one/full_mix.wav", "album/two/full_mix.flac", "one/full_mix.wav"]
    assert {a.action for a in actions} == {"link"}
    assert os.path.samefile(loose / "one.wav", dest / "one" / "full_mix.wav")
    assert {p: p.stat().st_mtime_ns for p in loose.rglob("*")} == before
    # a second organize finds everything in place
    assert {a.action for a in organize(loose, dest, mode="link")} == {"exists"}
    # a different file with a colliding name gets a new folder, the old one is untouched
    import soundfile as sf

    sf.write(loose / "new.tmp.wav", sine(seconds=0.2).T, 44100)
    os.replace(loose / "new.tmp.wav", loose / "one.wav")  # a new file under the old name
    again = {a.target.relative_to(dest).as_posix(): a.action for a in organize(loose, dest, mode="copy")}
    assert again["one (2)/full_mix.wav"] == "copy"
    assert len(discover(dest)) == 4


def test_organize_dry_run_changes_nothing_and_move_moves(loose: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    actions = organize(loose, dest, mode="move", dry_run=True)
    assert len(actions) == 3 and not dest.exists()
    organize(loose, dest, mode="move")
    assert not (loose / "one.wav").exists() and (dest / "one" / "full_mix.wav").exists()
    assert (loose / "cover.jpg").exists()


def test_organize_rejects_dest_inside_src(loose: Path) -> None:
    with pytest.raises(DatasetError, match="inside"):
        organize(loose, loose / "out")


def test_organize_cli(loose: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    proc = mirflow("organize", str(loose), str(dest), "--dry-run", check=True)
    assert "would link" in proc.stdout and not dest.exists()
    mirflow("organize", str(loose), str(dest), "--mode", "copy", check=True)
    assert len(discover(dest)) == 3
