"""Tiny VGGish-family models with the real interfaces, for tests (no weights can be downloaded).

Three model kinds, each built from the same seeded numpy weights as an ONNX graph (``onnx.helper``)
and, for the Essentia backend and ``convert``, as a frozen TensorFlow graph (``.pb``):

- classifier: ``model/Placeholder`` ``[N, 96, 64]`` -> ``model/Sigmoid`` ``[N, 2]`` (single stage);
- embedding: ``model/Placeholder`` ``[N, 96, 64]`` -> ``model/vggish/embeddings`` ``[N, 128]``;
- head: ``model/Placeholder`` ``[N, 128]`` -> ``model/Softmax`` ``[N, 2]``.

Each graph averages the patch over time, then applies small dense layers, so its output depends on
the input; :func:`reference` computes the same function in numpy.

The ``.pb`` fixtures in ``tests/data/classifiers/`` were written by this script with TensorFlow
(``python tests/tiny_models.py --write-pb tests/data/classifiers``); TensorFlow is not needed to run
the tests (it cannot share a process with ``essentia-tensorflow`` anyway).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "data" / "classifiers"

KINDS = {
    # kind: (input name, input dims after N, output name, output width)
    "classifier": ("model/Placeholder", (96, 64), "model/Sigmoid", 2),
    "embedding": ("model/Placeholder", (96, 64), "model/vggish/embeddings", 128),
    "head": ("model/Placeholder", (128,), "model/Softmax", 2),
}
SEEDS = {"classifier": 1, "embedding": 2, "head": 3}


def weights(kind: str, seed: int | None = None) -> dict[str, np.ndarray]:
    """Seeded weights of a tiny model of ``kind``."""
    rng = np.random.default_rng(SEEDS[kind] if seed is None else seed)
    if kind == "classifier":
        return {"w1": rng.normal(0, 0.3, (64, 8)).astype(np.float32),
                "b1": rng.normal(0, 0.1, 8).astype(np.float32),
                "w2": rng.normal(0, 0.5, (8, 2)).astype(np.float32),
                "b2": np.zeros(2, np.float32)}
    if kind == "embedding":
        return {"w1": rng.normal(0, 0.2, (64, 128)).astype(np.float32),
                "b1": rng.normal(0, 0.5, 128).astype(np.float32)}
    if kind == "head":
        return {"w1": rng.normal(0, 0.2, (128, 2)).astype(np.float32),
                "b1": np.zeros(2, np.float32)}
    raise ValueError(kind)


def reference(kind: str, x: np.ndarray, seed: int | None = None) -> np.ndarray:
    """The tiny model's output in numpy (float64), for known-answer checks."""
    w = {k: v.astype(np.float64) for k, v in weights(kind, seed).items()}
    x = np.asarray(x, dtype=np.float64)
    if kind == "classifier":
        h = np.tanh(x.mean(axis=1) @ w["w1"] + w["b1"])
        return 1.0 / (1.0 + np.exp(-(h @ w["w2"] + w["b2"])))
    if kind == "embedding":
        return np.maximum(x.mean(axis=1) @ w["w1"] + w["b1"], 0.0)
    z = x @ w["w1"] + w["b1"]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def build_onnx(kind: str, path: str | Path, *, seed: int | None = None,
               input_name: str | None = None, output_name: str | None = None,
               batch: int | str = "N") -> Path:
    """Write the tiny ``kind`` model as ONNX (opset 17) to ``path`` (``batch``: a fixed batch size,
    or a symbolic name for a free one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp, dims, out, width = KINDS[kind]
    inp, out = input_name or inp, output_name or out
    w = weights(kind, seed)
    inits = [numpy_helper.from_array(v, name=k) for k, v in w.items()]
    nodes = []
    if kind in ("classifier", "embedding"):
        nodes.append(helper.make_node("ReduceMean", [inp], ["pooled"], axes=[1], keepdims=0))
        src = "pooled"
    else:
        src = inp
    nodes += [helper.make_node("MatMul", [src, "w1"], ["mm1"]),
              helper.make_node("Add", ["mm1", "b1"], ["z1"])]
    if kind == "classifier":
        nodes += [helper.make_node("Tanh", ["z1"], ["h1"]),
                  helper.make_node("MatMul", ["h1", "w2"], ["mm2"]),
                  helper.make_node("Add", ["mm2", "b2"], ["z2"]),
                  helper.make_node("Sigmoid", ["z2"], [out])]
    elif kind == "embedding":
        nodes.append(helper.make_node("Relu", ["z1"], [out]))
    else:
        nodes.append(helper.make_node("Softmax", ["z1"], [out], axis=-1))
    graph = helper.make_graph(
        nodes, f"tiny-{kind}",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [batch, *dims])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, width])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_pb(kind: str, path: str | Path, *, seed: int | None = None) -> Path:
    """Write the tiny ``kind`` model as a frozen TensorFlow GraphDef (needs TensorFlow)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    inp, dims, out, width = KINDS[kind]
    w = weights(kind, seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, shape=(None, *dims), name=inp)
        src = tf.reduce_mean(x, axis=1) if kind != "head" else x
        z1 = tf.matmul(src, tf.constant(w["w1"])) + tf.constant(w["b1"])
        if kind == "classifier":
            z2 = tf.matmul(tf.tanh(z1), tf.constant(w["w2"])) + tf.constant(w["b2"])
            tf.sigmoid(z2, name=out)
        elif kind == "embedding":
            tf.nn.relu(z1, name=out)
        else:
            tf.nn.softmax(z1, name=out)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def metadata(name: str, kind: str, labels: list[str] | None = None, *,
             input_name: str | None = None, output_name: str | None = None) -> dict:
    """Essentia-style model metadata (the ``.json`` next to each upstream model)."""
    inp, dims, out, width = KINDS[kind]
    purpose = "embeddings" if kind == "embedding" else "predictions"
    meta = {"name": name, "type": "tiny test model", "version": "1", "framework": "tensorflow",
            "schema": {"inputs": [{"name": input_name or inp, "type": "float", "shape": [-1, *dims]}],
                       "outputs": [{"name": output_name or out, "type": "float", "shape": [-1, width],
                                    "output_purpose": purpose}]}}
    if labels:
        meta["classes"] = labels
    return meta


def install(models_dir: Path, name: str, kind: str, *, formats: tuple[str, ...] = ("onnx",),
            labels: list[str] | None = None, seed: int | None = None) -> Path:
    """Put tiny model files under the upstream ``name`` into ``models_dir`` (``.json`` always).

    ``formats``: ``"onnx"`` (built here) and/or ``"pb"`` (copied from the committed fixtures).
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    if "onnx" in formats:
        build_onnx(kind, models_dir / f"{name}.onnx", seed=seed)
    if "pb" in formats:
        if seed is not None and seed != SEEDS[kind]:
            raise ValueError("the committed .pb fixtures use the default seeds")
        (models_dir / f"{name}.pb").write_bytes((FIXTURES / f"tiny-{kind}.pb").read_bytes())
    (models_dir / f"{name}.json").write_text(json.dumps(metadata(name, kind, labels)))
    return models_dir


def install_single_stage(models_dir: Path, *, formats: tuple[str, ...] = ("onnx",),
                         keys: tuple[str, ...] | None = None) -> None:
    """Install every single-stage classifier of the registry (or those for ``keys``) as tiny models."""
    from mirflow.models import registry as models

    for spec in models.REGISTRY.values():
        if spec.role == "classifier" and (keys is None or spec.key in keys):
            install(models_dir, spec.name, "classifier", formats=formats, labels=list(spec.labels))


def install_two_stage(models_dir: Path, *, formats: tuple[str, ...] = ("onnx",),
                      keys: tuple[str, ...] | None = None) -> None:
    """Install the embedding model and every head of the registry (or those for ``keys``)."""
    from mirflow.models import registry as models

    install(models_dir, "audioset-vggish-3", "embedding", formats=formats)
    for spec in models.REGISTRY.values():
        if spec.role == "head" and (keys is None or spec.key in keys):
            install(models_dir, spec.name, "head", formats=formats, labels=list(spec.labels))


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write-pb":
        for kind in KINDS:
            print(build_pb(kind, Path(argv[1]) / f"tiny-{kind}.pb"))
        return 0
    print("usage: python tests/tiny_models.py --write-pb FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
