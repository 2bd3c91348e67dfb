"""Model registry, lookup, download (resume, atomic, checksums), verify and convert, for real over HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mirflow.models import registry as models
from mirflow.cli.models import models as models_cli
from mirflow.core.errors import ConfigError

import tiny_models as tm


# -- a local HTTP server with Range support and a switch to cut a transfer short ---------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    log: list
    cut_after: dict  # path -> bytes to send before dropping the connection (once)

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        self.log.append((self.path, self.headers.get("Range")))
        path = self.root / self.path.lstrip("/").replace("models/", "", 1)
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "upstream"
    handler = type("H", (_Handler,), {"root": root, "log": [], "cut_after": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/models", root, handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _publish(root: Path, name: str, kind: str, *, size_pad: int = 0) -> dict[str, bytes]:
    """Place tiny upstream files of model ``name`` where the registry URLs point (under ``root``)."""
    spec = models.get(name)
    files = {}
    for mf in spec.files:
        rel = mf.url.split("/models/", 1)[1]
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mf.kind == "onnx":
            tm.build_onnx(kind, dest)
            if size_pad:  # make it large enough that a cut transfer really is partial
                dest.write_bytes(dest.read_bytes())
        elif mf.kind == "pb":
            dest.write_bytes((tm.FIXTURES / f"tiny-{kind}.pb").read_bytes() + b"\0" * size_pad)
        else:
            dest.write_text(json.dumps(tm.metadata(name, kind, list(spec.labels))))
        files[mf.name] = dest.read_bytes()
    return files


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(models.ENV_VAR, raising=False)


# -- registry ------------------------------------------------------------------------------------
def test_registry_entries_have_upstream_names_urls_labels_and_licence():
    for name, spec in models.REGISTRY.items():
        if spec.family == "demucs":
            continue  # checked in test_demucs_entries_come_from_demucs_catalogue
        assert spec.licence == "CC BY-NC-SA 4.0"
        assert {f.kind for f in spec.files} >= {"pb", "json"}
        for f in spec.files:
            assert f.name == f"{name}.{f.kind}"
            assert f.url.startswith("https://essentia.upf.edu/models/") and f.url.endswith(f.name)
    assert models.get("danceability-vggish-audioset-1").labels == ("danceable", "not_danceable")
    assert models.get("tonal_atonal-vggish-audioset-1").labels == ("atonal", "tonal")
    assert models.get("danceability-vggish-audioset-1").input == "model/Placeholder"
    assert models.get("danceability-vggish-audioset-1").output == "model/Sigmoid"
    assert models.get("audioset-vggish-3").output == "model/vggish/embeddings"
    assert models.classifier_keys() == ["danceability", "atonality", "instrumentalness",
                                        "vocal_gender_female"]
    assert models.two_stage_names("danceability") == ["audioset-vggish-3", "danceability-audioset-vggish-1"]
    with pytest.raises(ConfigError, match="unknown model"):
        models.get("nope")


def test_lookup_order_models_dir_then_env_then_cache(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    cache = tmp_path / "home" / ".cache" / "mirflow" / "models"
    monkeypatch.setenv(models.ENV_VAR, str(b))
    assert models.search_dirs(a) == [a, b, cache]
    assert models.primary_dir(None) == b
    for d in (a, b, cache):
        d.mkdir(parents=True, exist_ok=True)
    (cache / "x.pb").write_text("c")
    assert models.find_file("x.pb", a) == cache / "x.pb"
    (b / "x.pb").write_text("b")
    assert models.find_file("x.pb", a) == b / "x.pb"
    (a / "x.pb").write_text("a")
    assert models.find_file("x.pb", a) == a / "x.pb"


def test_interface_reads_node_names_and_classes_from_metadata(tmp_path):
    spec = models.get("danceability-audioset-vggish-1")
    assert models.interface(spec, tmp_path) == models.Interface("model/Placeholder", "model/Softmax",
                                                                spec.labels)
    meta = tm.metadata(spec.name, "head", ["not_danceable", "danceable"],
                       input_name="embeddings:0", output_name="model/Softmax:0")
    (tmp_path / f"{spec.name}.json").write_text(json.dumps(meta))
    iface = models.interface(spec, tmp_path)
    assert iface == models.Interface("embeddings", "model/Softmax", ("not_danceable", "danceable"))
    assert models.strip_port("model/Placeholder:0") == "model/Placeholder"


# -- download, resume, verify -------------------------------------------------------------------------
def test_download_writes_files_and_lock_with_sha256(server, tmp_path):
    base, root, handler = server
    files = _publish(root, "danceability-audioset-vggish-1", "head")
    dest = tmp_path / "models"
    seen = []
    written = models.download(["danceability-audioset-vggish-1"], models_dir=dest, base_url=base,
                              progress=lambda n, d, t: seen.append((n, d, t)))
    assert sorted(p.name for p in written) == sorted(files)
    lock = json.loads((dest / models.LOCK_NAME).read_text())["files"]
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
        assert lock[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert lock[name]["size"] == len(data)
    assert seen and seen[-1][1] == seen[-1][2]
    assert not list(dest.glob("*.part"))
    # a second download finds the verified files and fetches nothing
    handler.log.clear()
    assert models.download(["danceability-audioset-vggish-1"], models_dir=dest, base_url=base) == []
    assert handler.log == []


def test_optional_onnx_missing_upstream_is_skipped(server, tmp_path):
    base, root, _ = server
    _publish(root, "danceability-audioset-vggish-1", "head")
    (root / "classification-heads/danceability/danceability-audioset-vggish-1.onnx").unlink()
    written = models.download(["danceability-audioset-vggish-1"], models_dir=tmp_path, base_url=base)
    assert sorted(p.suffix for p in written) == [".json", ".pb"]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, root, handler = server
    files = _publish(root, "danceability-vggish-audioset-1", "classifier", size_pad=200_000)
    pb = "danceability-vggish-audioset-1.pb"
    url_path = "/models/classifiers/danceability/" + pb
    handler.cut_after[url_path] = 70_000
    with pytest.raises(models.DownloadError, match="interrupted"):
        models.download(["danceability-vggish-audioset-1"], models_dir=tmp_path, base_url=base)
    part = tmp_path / (pb + ".part")
    assert part.exists() and 0 < part.stat().st_size < len(files[pb])
    assert not (tmp_path / pb).exists()  # never visible half-written
    have = part.stat().st_size
    models.download(["danceability-vggish-audioset-1"], models_dir=tmp_path, base_url=base)
    assert (url_path, f"bytes={have}-") in handler.log
    assert (tmp_path / pb).read_bytes() == files[pb]
    assert not part.exists()


def test_checksum_mismatch_is_refused(server, tmp_path):
    base, root, _ = server
    data = b"x" * 1000
    (root / "f.bin").parent.mkdir(parents=True, exist_ok=True)
    (root / "f.bin").write_bytes(data)
    with pytest.raises(models.DownloadError, match="SHA-256 mismatch"):
        models.download_file(f"{base}/f.bin", tmp_path / "f.bin", sha256="0" * 64)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    digest = models.download_file(f"{base}/f.bin", tmp_path / "f.bin",
                                  sha256=hashlib.sha256(data).hexdigest())
    assert digest == hashlib.sha256(data).hexdigest()


def test_http_error_names_the_file(server, tmp_path):
    base, _, _ = server
    with pytest.raises(models.DownloadError, match="HTTP 404"):
        models.download(["gender-vggish-audioset-1"], models_dir=tmp_path, base_url=base)


def test_verify_detects_changed_truncated_unrecorded_and_missing(server, tmp_path):
    base, root, _ = server
    _publish(root, "danceability-vggish-audioset-1", "classifier")
    models.download(["danceability-vggish-audioset-1"], models_dir=tmp_path, base_url=base)
    assert {s.status for s in models.verify(models_dir=tmp_path)} == {"ok"}
    pb = tmp_path / "danceability-vggish-audioset-1.pb"
    original = pb.read_bytes()
    pb.write_bytes(original[: len(original) // 2])
    js = tmp_path / "danceability-vggish-audioset-1.json"
    js.write_text(js.read_text() + " ")
    status = {s.file: s.status for s in models.verify(models_dir=tmp_path)}
    assert status == {pb.name: "truncated", js.name: "changed"}
    # a file placed by hand is unrecorded until recorded; a model with a missing file says so
    shutil.copy(tm.FIXTURES / "tiny-head.pb", tmp_path / "gender-audioset-vggish-1.pb")
    status = {s.file: s.status for s in models.verify(models_dir=tmp_path)}
    assert status["gender-audioset-vggish-1.pb"] == "unrecorded"
    assert status["gender-audioset-vggish-1.json"] == "missing"
    models.record(tmp_path / "gender-audioset-vggish-1.pb")
    status = {s.file: s.status for s in models.verify(["gender-audioset-vggish-1"], models_dir=tmp_path)}
    assert status["gender-audioset-vggish-1.pb"] == "ok"


# -- command line ----------------------------------------------------------------------------------
def test_cli_list_json_download_verify(server, tmp_path):
    base, root, _ = server
    _publish(root, "tonal_atonal-vggish-audioset-1", "classifier")
    runner = CliRunner()
    res = runner.invoke(models_cli, ["download", "tonal_atonal-vggish-audioset-1",
                                     "--models-dir", str(tmp_path), "--base-url", base])
    assert res.exit_code == 0, res.output
    res = runner.invoke(models_cli, ["list", "--json", "--models-dir", str(tmp_path)])
    assert res.exit_code == 0
    listing = json.loads(res.stdout)
    assert listing["licence"] == "CC BY-NC-SA 4.0"
    entry = next(m for m in listing["models"] if m["name"] == "tonal_atonal-vggish-audioset-1")
    assert set(entry["installed"]) == {"pb", "json"} and entry["labels"] == ["atonal", "tonal"]
    res = runner.invoke(models_cli, ["verify", "--json", "--models-dir", str(tmp_path)])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True
    (tmp_path / "tonal_atonal-vggish-audioset-1.pb").write_bytes(b"corrupt")
    res = runner.invoke(models_cli, ["verify", "--models-dir", str(tmp_path)])
    assert res.exit_code == 1
    res = runner.invoke(models_cli, ["download", "no-such-model"])
    assert res.exit_code == 2 and "unknown model" in res.output
    res = runner.invoke(models_cli, ["list"])
    assert res.exit_code == 0 and "CC BY-NC-SA 4.0" in res.output


# -- convert -------------------------------------------------------------------------------------
@pytest.mark.skipif(not models.tf2onnx_available(),
                    reason="needs tf2onnx and TensorFlow: pip install tf2onnx tensorflow-cpu")
def test_convert_pb_to_onnx_agrees_with_the_pb_model(tmp_path):
    import onnxruntime as ort

    tm.install(tmp_path, "danceability-vggish-audioset-1", "classifier", formats=("pb",),
               labels=["danceable", "not_danceable"])
    dest = models.convert("danceability-vggish-audioset-1", models_dir=tmp_path)
    assert dest == tmp_path / "danceability-vggish-audioset-1.onnx"
    lock = models.read_lock(tmp_path)
    assert lock[dest.name]["sha256"] == models.sha256_file(dest)
    sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    assert models.strip_port(sess.get_inputs()[0].name) == "model/Placeholder"
    x = np.random.default_rng(0).normal(-3, 1, (5, 96, 64)).astype(np.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, tm.reference("classifier", x), atol=1e-5)


def test_convert_without_pb_or_tf2onnx_says_what_to_do(tmp_path, monkeypatch):
    from mirflow.core.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="mirflow models download gender-vggish-audioset-1"):
        models.convert("gender-vggish-audioset-1", models_dir=tmp_path)
    tm.install(tmp_path, "gender-vggish-audioset-1", "classifier", formats=("pb",))
    monkeypatch.setattr(models, "tf2onnx_available", lambda: False)
    with pytest.raises(models.ConvertError, match="pip install tf2onnx"):
        models.convert("gender-vggish-audioset-1", models_dir=tmp_path)


# -- Demucs models in the registry -------------------------------------------------------------------
from mirflow.models import demucs as dm  # noqa: E402


@pytest.fixture
def demucs_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches under tmp_path; returns (torch checkpoints, hf hub)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (tmp_path / "hf").mkdir()
    return ckpt, tmp_path / "hf"


def _tiny_file(folder: Path, sig: str, seed: int = 0) -> Path:
    """A tiny HTDemucs saved as ``<sig>-<first 8 hex of its SHA-256>.th`` (Demucs' naming)."""
    pytest.importorskip("torch")
    pytest.importorskip("demucs")
    from tiny_demucs import save_model, tiny_htdemucs

    folder.mkdir(parents=True, exist_ok=True)
    return save_model(tiny_htdemucs(seed=seed), folder, sig)


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.skipif(dm.remote_dir() is None, reason="needs demucs installed")
def test_demucs_entries_come_from_demucs_catalogue():
    pretrained = pytest.importorskip("demucs.pretrained")
    from demucs.hf import DEFAULT_NAMESPACE

    assert dm.ROOT_URL == pretrained.ROOT_URL and dm.HF_NAMESPACE == DEFAULT_NAMESPACE
    published = pretrained._parse_remote_files(pretrained.REMOTE_ROOT / "files.txt")  # Demucs' parser
    assert {s: w.url for s, w in dm.remote_files().items()} == published
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "mdx_extra"):
        spec = models.get(name)
        assert spec.family == "demucs" and spec.role == "separation"
        assert "MIT" in spec.licence and "scientific" in spec.licence
        assert spec.page == "https://github.com/adefossez/demucs"
        assert spec.files and all(f.url.startswith(pretrained.ROOT_URL) and f.url.endswith(f.name)
                                  for f in spec.files)
        assert all(len(f.sha256_prefix) == 8 for f in spec.files)
        assert [f.name.split("-")[0] for f in spec.files] == list(dm.published_bag(name))
    assert models.get("htdemucs").files[0].name == "955717e8-8726e21a.th"
    assert models.get("htdemucs").files[0].sha256_prefix == "8726e21a"
    assert len(models.get("htdemucs_ft").files) == 4
    assert models.get("htdemucs_6s").labels == ("drums", "bass", "other", "vocals", "guitar", "piano")
    assert models.classifier_keys() == ["danceability", "atonality", "instrumentalness",
                                        "vocal_gender_female"]  # Demucs entries fill no classifier key


def test_hash_prefix_is_the_sha256_prefix_demucs_checks(tmp_path):
    """The part after the dash in ``<sig>-<prefix>.th`` is the start of the file's SHA-256: Demucs'
    own ``check_checksum`` accepts the file under that name and refuses it once a byte changes;
    mirflow's check agrees both times."""
    pytest.importorskip("demucs")
    from demucs.repo import ModelLoadingError, check_checksum

    good = _tiny_file(tmp_path / "repo", "abc00000")
    sig, prefix = good.stem.split("-")
    assert hashlib.sha256(good.read_bytes()).hexdigest()[:8] == prefix
    check_checksum(good, prefix)
    assert dm.check_file(good).status == "ok"
    _corrupt(good)
    with pytest.raises(ModelLoadingError, match="Invalid checksum"):
        check_checksum(good, prefix)
    check = dm.check_file(good)
    assert check.status == "changed" and prefix in check.detail
    plain = tmp_path / "repo" / "abc00001.th"
    plain.write_bytes(b"x")
    assert dm.check_file(plain).status == "unrecorded"


def test_local_scan_and_cache_paths_agree_with_demucs_and_torch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from demucs.repo import LocalRepo

    repo = tmp_path / "repo"
    _tiny_file(repo, "abc00000")
    (repo / "f00df00d.th").write_bytes(b"x")
    (repo / "notes.txt").write_text("not a model")
    assert dm.scan_weights(repo) == LocalRepo(repo).list_model()
    for env in ({"TORCH_HOME": str(tmp_path / "t")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert dm.torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"


def test_demucs_lookup_order_and_signature(tmp_path, demucs_caches):
    pytest.importorskip("demucs")  # the signatures come from the remote files Demucs ships
    ckpt, _ = demucs_caches
    mdir = tmp_path / "models"
    assert dm.locate("htdemucs", dirs=[mdir]) is None
    assert dm.signature("htdemucs") == "955717e8"
    assert dm.signature("htdemucs_ft") == "f7e0c4bc+d12395a8+92cfc3b6+04573f0d"
    (ckpt / "955717e8-8726e21a.th").write_bytes(b"x")
    assert dm.locate("htdemucs", dirs=[mdir]).where == "torch-hub"
    mdir.mkdir()
    (mdir / "955717e8-8726e21a.th").write_bytes(b"x")
    found = dm.locate_all("htdemucs", dirs=[mdir])
    assert [loc.where for loc in found] == ["models-dir", "torch-hub"]
    assert found[0].files == (mdir / "955717e8-8726e21a.th",) and found[0].signature == "955717e8"
    # a bag only partly present is not available
    (mdir / "f7e0c4bc-ba3fe64a.th").write_bytes(b"x")
    assert dm.locate("htdemucs_ft", dirs=[mdir]) is None
    # with a repo, only the repo counts
    repo = tmp_path / "repo"
    _tiny_file(repo, "abc00000")
    (repo / "tiny.yaml").write_text("models: ['abc00000']\n")
    assert dm.locate("htdemucs", repo=repo, dirs=[mdir]) is None
    assert dm.locate("tiny", repo=repo).where == "repo"
    assert dm.repo_models(repo) == ["tiny"]
    assert "htdemucs" in dm.repo_problem("htdemucs", repo) and "tiny" in dm.repo_problem("htdemucs", repo)


def test_load_from_cache_without_network_checks_the_hash(tmp_path, demucs_caches):
    """``htdemucs`` from the torch hub cache (a tiny stand-in under the published signature and its
    own hash prefix) loads through Demucs' LocalRepo + packaged bag, offline; a flipped byte is refused."""
    pytest.importorskip("demucs")
    from demucs.apply import BagOfModels

    from mirflow.core.errors import ModelUnavailableError

    ckpt, _ = demucs_caches
    f = _tiny_file(ckpt, "955717e8")
    loc = dm.locate("htdemucs")
    assert loc.where == "torch-hub" and loc.bag.parent == dm.remote_dir()
    model = dm.load("htdemucs")
    assert isinstance(model, BagOfModels) and list(model.sources) == list(dm.STANDARD_SOURCES)
    # not the published file: verify says so even though its own prefix matches
    check = dm.check_file(f)
    assert check.status == "changed" and "955717e8-8726e21a.th" in check.detail
    _corrupt(f)
    with pytest.raises(ModelUnavailableError, match="(?i)checksum"):
        dm.load("htdemucs")


def test_load_from_hugging_face_cache_checks_blobs(tmp_path, demucs_caches):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from tiny_demucs import clip, save_hf_snapshot, tiny_htdemucs

    from mirflow.core.errors import ModelUnavailableError

    _, hf = demucs_caches
    ref = tiny_htdemucs(seed=4)
    snap = save_hf_snapshot(hf, "htdemucs_6s", [ref], ["5c90dfd2"], repo_name="HTDemucs-6s")
    loc = dm.locate("htdemucs_6s")
    assert loc.where == "hf-cache" and loc.folder == snap
    assert [c.status for c in dm.check_location(loc)] == ["ok", "ok"]  # yaml (Git blob id), weights (SHA-256)
    model = dm.load("htdemucs_6s")
    x = torch.from_numpy(clip(1.0))[None]
    with torch.no_grad():
        assert torch.allclose(model.models[0](x), ref(x), atol=1e-6)  # the same weights
    _corrupt(snap / "5c90dfd2.safetensors")
    statuses = [c.status for c in dm.check_location(loc)]
    assert statuses == ["ok", "changed"]
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        dm.load("htdemucs_6s")


def test_verify_and_list_demucs_weights(tmp_path, demucs_caches):
    ckpt, _ = demucs_caches
    repo = tmp_path / "repo"
    good = _tiny_file(repo, "abc00000")
    bad = _tiny_file(repo, "abc00001", seed=1)
    (repo / "tiny.yaml").write_text("models: ['abc00000', 'abc00001']\n")
    status = {s.file: s.status for s in models.verify(demucs_repo=repo)}
    assert status == {good.name: "ok", bad.name: "ok"}
    _corrupt(bad)
    status = {s.file: (s.model, s.status) for s in models.verify(demucs_repo=repo)}
    assert status == {good.name: ("tiny", "ok"), bad.name: ("tiny", "changed")}
    # the published htdemucs file name with other content: changed; named but absent: missing
    (ckpt / "955717e8-8726e21a.th").write_bytes(good.read_bytes())
    (row,) = models.verify(["htdemucs"])
    assert (row.status, row.path, row.detail.split(":")[0]) == ("changed", ckpt / "955717e8-8726e21a.th",
                                                               "torch-hub")
    (missing,) = models.verify(["mdx_extra"])
    assert missing.status == "missing" and "e51eebcc-c1b80bdd.th" in missing.file
    assert models.verify() and all(s.model == "htdemucs" for s in models.verify())
    listing = {r.spec.name: r for r in models.list_models(models_dir=tmp_path / "m")}
    assert listing["htdemucs"].installed == {"torch-hub": ckpt}
    assert listing["htdemucs_ft"].installed == {}


def test_cli_list_and_verify_show_demucs(tmp_path, demucs_caches):
    ckpt, _ = demucs_caches
    repo = tmp_path / "repo"
    f = _tiny_file(repo, "abc00000")
    (repo / "tiny.yaml").write_text("models: ['abc00000']\n")
    runner = CliRunner()
    res = runner.invoke(models_cli, ["list", "--json", "--models-dir", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    listing = json.loads(res.stdout)
    names = {m["name"]: m for m in listing["models"]}
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", "mdx_extra"} <= set(names)
    ht = names["htdemucs"]
    assert ht["family"] == "demucs" and ht["installed"] == {} and "scientific" in ht["licence"]
    assert ht["files"][0]["url"] == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    assert ht["files"][0]["sha256_prefix"] == "8726e21a"
    assert "scientific purposes" in listing["licences"]["demucs"]
    res = runner.invoke(models_cli, ["list"])
    flat = "".join(res.output.split())  # the table wraps at the console width
    assert res.exit_code == 0 and "htdemucs_6s" in res.output and "facebookresearch/demucs#327" in flat
    assert str(ckpt) in flat
    res = runner.invoke(models_cli, ["verify", "--json", "--sep-repo", str(repo), "--models-dir", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert [(r["model"], r["status"]) for r in json.loads(res.stdout)["files"]] == [("tiny", "ok")]
    res = runner.invoke(models_cli, ["verify", "tiny", "--sep-repo", str(repo)])
    assert res.exit_code == 0, res.output
    _corrupt(f)
    res = runner.invoke(models_cli, ["verify", "--sep-repo", str(repo)])
    assert res.exit_code == 1 and "changed" in res.output
    res = runner.invoke(models_cli, ["verify", "htdemucs"])
    assert res.exit_code == 1 and "missing" in res.output


def test_download_demucs_weights_checks_the_name_prefix(server, tmp_path, demucs_caches, monkeypatch):
    """``models download htdemucs`` (here from a local server) keeps a file only when its SHA-256
    starts with the prefix in its name; the models folder then serves the model offline."""
    base, root, _ = server
    tiny = _tiny_file(tmp_path / "built", "955717e8")
    dest = tmp_path / "models"
    # the published name with other content is refused and leaves nothing behind
    (root / "hybrid_transformer").mkdir(parents=True)
    (root / "hybrid_transformer" / "955717e8-8726e21a.th").write_bytes(tiny.read_bytes())
    with pytest.raises(models.DownloadError, match="8726e21a"):
        models.download(["htdemucs"], models_dir=dest, base_url=base)
    assert not list(dest.glob("*.th*"))
    # a file whose name carries its own prefix is kept, recorded, and found by the lookup
    spec = models.get("htdemucs")
    own = models.ModelFile(tiny.name, f"{dm.ROOT_URL}hybrid_transformer/{tiny.name}",
                           sha256_prefix=tiny.stem.split("-")[1])
    monkeypatch.setitem(models.REGISTRY, "htdemucs", dataclasses.replace(spec, files=(own,)))
    (root / "hybrid_transformer" / tiny.name).write_bytes(tiny.read_bytes())
    (written,) = models.download(["htdemucs"], models_dir=dest, base_url=base)
    assert written == dest / tiny.name
    assert models.read_lock(dest)[tiny.name]["sha256"].startswith(tiny.stem.split("-")[1])
    assert dm.locate("htdemucs", dirs=[dest]).where == "models-dir"


def test_bag_files_read_like_pyyaml(tmp_path, monkeypatch):
    """Every bag Demucs ships, and other YAML forms, give the signatures PyYAML reads."""
    yaml = pytest.importorskip("yaml")
    bags = sorted(dm.remote_dir().glob("*.yaml")) if dm.remote_dir() else []
    other = tmp_path / "multi.yaml"
    other.write_text("weights: [[1.0]]\nmodels:\n  - f7e0c4bc\n  - 'd12395a8'\n")
    one = tmp_path / "one.yaml"
    one.write_text("models: ['f7e0c4bc', \"d12395a8\", 04573f0d]\n")
    for bag in [*bags, other, one]:
        want = tuple(str(x) for x in yaml.safe_load(bag.read_text())["models"])
        assert dm.read_bag(bag) == want, bag
    assert dm.read_bag(one) == ("f7e0c4bc", "d12395a8", "04573f0d")
    monkeypatch.setitem(sys.modules, "yaml", None)  # the one-line form needs no PyYAML
    assert dm.read_bag(one) == ("f7e0c4bc", "d12395a8", "04573f0d")
