"""Export: typed columns, relative paths, header facts, provenance, CSV nulls, JSON Lines, the
per-stem long table, and that the Parquet file loads in pandas, DuckDB and Hugging Face datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import mirflow, sidecar
from results_fixtures import SR, make_analysed_dataset


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_analysed_dataset(tmp_path_factory.mktemp("export") / "ds")


def test_parquet_columns_types_and_provenance(analysed: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    mirflow("export", str(analysed), "-o", str(out), check=True)
    table = pq.read_table(out)
    names = table.column_names
    assert names[:6] == ["track", "path", "duration_s", "sample_rate", "channels", "codec"]
    assert names[-1] == "failed" and "my_label" in names and "bpm" in names
    schema = table.schema
    assert schema.field("beats").type == pa.list_(pa.float64())
    assert schema.field("stems_analyzed").type == pa.list_(pa.string())
    assert schema.field("failed").type == pa.list_(pa.string())
    assert schema.field("sample_rate").type == pa.int64()
    assert schema.field("lufs").type == pa.float64()
    rows = {r["track"]: r for r in table.to_pylist()}
    assert list(rows) == ["a/song one", "broken", "song two", "with stems"]
    one = rows["a/song one"]
    assert one["path"] == "a/song one/full_mix.flac"  # relative to the dataset
    assert one["duration_s"] == pytest.approx(6.0) and one["sample_rate"] == SR
    assert one["channels"] == 2 and one["codec"] == "flac"
    assert rows["song two"]["codec"] == "pcm_16" and rows["song two"]["my_label"] == "keep"
    assert one["lufs"] == sidecar(analysed / "a" / "song one")["lufs"]
    assert one["failed"] is None and set(rows["broken"]["failed"]) == {"loudness", "spectral", "tonal", "rhythm"}  # stems: blocked, not failed
    assert rows["broken"]["duration_s"] is None and rows["broken"]["lufs"] is None
    assert rows["with stems"]["stems_analyzed"] == ["bass", "drums"]

    meta = json.loads(table.schema.metadata[b"mirflow"])
    import mirflow as api

    assert meta["mirflow_version"] == api.__version__
    assert meta["dataset_root"] == str(analysed.resolve()) and meta["table"] == "tracks"
    rhythm = meta["analyzers"]["rhythm"]
    assert rhythm["installed_version"] >= 1 and sum(rhythm["versions"].values()) == 4
    (digest, entry), = rhythm["params"].items()
    assert entry["tracks"] == 4 and entry["values"]["silence_db"] == -60  # readable parameters
    assert digest == sidecar(analysed / "a" / "song one")["_mirflow"]["rhythm"]["params"]


def test_csv_nulls_are_empty_cells_and_numbers_stay_numbers(analysed: Path, tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "t.csv"
    mirflow("export", str(analysed), "-o", str(out), check=True)
    raw = list(csv.reader(out.open()))
    header, broken = raw[0], raw[2]
    assert broken[header.index("lufs")] == "" and broken[header.index("duration_s")] == ""
    df = pd.read_csv(out)
    assert df["lufs"].dtype == "float64" and df["sample_rate"].isna().sum() == 1
    assert df["failed"].isna().sum() == 3  # tracks without failures: empty, not ""
    assert json.loads(df.loc[df.track == "with stems", "stems_analyzed"].item()) == ["bass", "drums"]


def test_jsonl_and_stem_table(analysed: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    mirflow("export", str(analysed), "-o", str(out), check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and isinstance(rows[0]["beats"], list) and rows[1]["lufs"] is None

    stems = tmp_path / "stems.parquet"
    proc = mirflow("export", str(analysed), "--stems", "-o", str(stems), check=True)
    assert "2 rows" in proc.stderr
    table = pq.read_table(stems)
    assert table.column_names[:3] == ["track", "stem", "path"]
    data = sidecar(analysed / "with stems")
    by_stem = {r["stem"]: r for r in table.to_pylist()}
    assert set(by_stem) == {"bass", "drums"}
    assert by_stem["drums"]["lufs"] == data["drums_lufs"]
    assert by_stem["bass"]["spectral_centroid_mean"] == data["bass_spectral_centroid_mean"]
    assert by_stem["drums"]["path"] == "with stems/drums.flac"
    assert json.loads(table.schema.metadata[b"mirflow"])["table"] == "stems"


def test_parquet_loads_in_pandas_duckdb_and_hf_datasets(analysed: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb
    import pandas as pd

    out = tmp_path / "t.parquet"
    mirflow("export", str(analysed), "-o", str(out), check=True)
    df = pd.read_parquet(out)
    assert len(df) == 4 and df["lufs"].dtype == "float64"
    assert list(df.loc[df.track == "with stems", "stems_analyzed"].item()) == ["bass", "drums"]

    con = duckdb.connect()
    n, mean_bpm = con.execute(
        "select count(*), avg(bpm) from read_parquet(?) where failed is null", [str(out)]).fetchone()
    assert n == 3 and mean_bpm == pytest.approx(df["bpm"].mean())
    beats = con.execute("select len(beats) from read_parquet(?) where track = 'a/song one'",
                        [str(out)]).fetchone()[0]
    assert beats == df.loc[df.track == "a/song one", "beat_count"].item()

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 4 and ds.features["stems_analyzed"].feature.dtype == "string"
    assert ds[0]["track"] == "a/song one" and ds[0]["lufs"] == pytest.approx(df.loc[0, "lufs"])


def test_export_rejects_unknown_format(analysed: Path, tmp_path: Path) -> None:
    proc = mirflow("export", str(analysed), "-o", str(tmp_path / "x.xlsx"))
    assert proc.returncode == 2 and ".parquet, .csv or .jsonl" in proc.stderr
