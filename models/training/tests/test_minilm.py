"""The minilm featurizer: artifacts carry the encoder and tokenizer, and features follow
the contract (256-token truncation, no padding, mean pooling, unit norm)."""

import hashlib
import json

import numpy as np
import pytest

from routeiq_training import artifact, featurize, train

try:
    ENCODER = featurize.default_encoder_path()
    MODEL_ZIP = featurize.default_model_zip()
except ValueError:
    ENCODER = MODEL_ZIP = None

pytestmark = pytest.mark.skipif(ENCODER is None, reason="requirements-encoder.txt not installed")


@pytest.fixture(scope="module")
def minilm_artifacts(fixture_paths, tmp_path_factory):
    data, llms = fixture_paths
    tmp = tmp_path_factory.mktemp("minilm")
    small = tmp / "routing_small.json"
    small.write_text(json.dumps(json.loads(data.read_text())[:200]))
    _, in_memory = train.run(small, llms, tmp / "out", ["knn", "mlp", "elo"], "minilm", 0, 0,
                             calibration_folds=0)
    return tmp / "out", in_memory


def test_encoder_and_tokenizer_are_copied_into_the_artifact(minilm_artifacts):
    out, _ = minilm_artifacts
    manifest = json.loads((out / "knn" / "manifest.json").read_text())
    assert manifest["featurizer"] == {"name": "minilm", "version": 1, "dim": 384,
                                      "max_tokens": 256, "quantized": True}
    assert set(manifest["files"]) == {"params.json", "knn.f32", "encoder.onnx", "tokenizer.json"}
    encoder = (out / "knn" / "encoder.onnx").read_bytes()
    assert encoder == featurize.quantize_encoder(ENCODER.read_bytes())
    assert manifest["files"]["encoder.onnx"] == hashlib.sha256(encoder).hexdigest()
    assert (out / "knn" / "tokenizer.json").read_bytes() == \
        featurize.read_from_zip(MODEL_ZIP, "tokenizer.json")
    elo = json.loads((out / "elo" / "manifest.json").read_text())
    assert elo["featurizer"] is None and elo["files"] == {"params.json": elo["files"]["params.json"]}


def test_truncation_256_no_padding_mean_pooling(minilm_artifacts):
    out, _ = minilm_artifacts
    router = artifact.load(out / "mlp")
    enc = router.featurizer
    assert len(enc.tokenizer.encode("hello world").ids) == 4  # [CLS] hello world [SEP]
    assert len(enc.tokenizer.encode("word " * 1000).ids) == 256
    e = router.features(["hello world", "word " * 1000, ""])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    # mean over the tokens of the unpadded sequence, straight from the ONNX output
    ids = enc.tokenizer.encode("hello world")
    hidden = enc.session.run(None, {
        "input_ids": np.array([ids.ids]), "attention_mask": np.array([ids.attention_mask]),
        "token_type_ids": np.array([ids.type_ids])})[0][0]
    mean = hidden.mean(axis=0)
    np.testing.assert_allclose(e[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_minilm_artifacts_reproduce_the_in_memory_models(minilm_artifacts):
    out, in_memory = minilm_artifacts
    queries = ["What is the capital of France?", "", "Write a function to sort a list."]
    for strategy in ("knn", "mlp"):
        router = artifact.load(out / strategy)
        e = router.features(queries)
        np.testing.assert_allclose(router.score_features(e), in_memory[strategy].reference(e),
                                   atol=1e-4)


def test_minilm_knn_rows_are_projected_to_the_tuned_width(minilm_artifacts):
    out, _ = minilm_artifacts
    params = json.loads((out / "knn" / "params.json").read_text())
    width = len(params["projection"]) if "projection" in params else 384
    assert width in (32, 64, 128, 384)
    if "projection" in params:
        assert np.array(params["projection"]).shape == (width, 384)
    rows = np.frombuffer((out / "knn" / "knn.f32").read_bytes(), "<f4")
    rows = rows.reshape(len(params["labels"]), width).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)


def test_encoder_layers_cuts_the_graph_and_keeps_the_contract():
    import onnx
    import onnxruntime as ort

    full = ENCODER.read_bytes()
    assert featurize.encoder_layers(full) == 6
    assert featurize.truncate_encoder(full, 6) == full
    cut = featurize.truncate_encoder(full, 2)
    full_model, cut_model = onnx.load_from_string(full), onnx.load_from_string(cut)
    assert featurize.encoder_layers(cut) == 2
    assert len(cut_model.graph.node) < len(full_model.graph.node)
    assert len(cut_model.graph.initializer) < len(full_model.graph.initializer)
    assert [i.name for i in cut_model.graph.input] == \
        ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in cut_model.graph.output] == ["last_hidden_state"]
    assert cut_model.graph.output[0] == full_model.graph.output[0]  # same type and shape
    with pytest.raises(ValueError):
        featurize.truncate_encoder(full, 7)
    with pytest.raises(ValueError):
        featurize.build("hashed-ngram", 64, layers=2)

    # the cut output is the full graph's layer-1 output tensor
    tap = featurize._layer_outputs(full_model.graph)[1]
    full_model.graph.output.append(onnx.helper.make_tensor_value_info(tap, 1, None))
    tapped = ort.InferenceSession(full_model.SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(cut, providers=["CPUExecutionProvider"])
    ids = np.array([[101, 7592, 2088, 102]])
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids),
              "token_type_ids": np.zeros_like(ids)}
    (hidden,) = session.run(None, inputs)
    assert hidden.shape == (1, 4, 384)
    np.testing.assert_array_equal(hidden, tapped.run([tap], inputs)[0])
    full_hidden = tapped.run(["last_hidden_state"], inputs)[0]
    assert not np.allclose(hidden, full_hidden)

    enc = featurize.build("minilm", 0, layers=2)
    assert enc.files()["encoder.onnx"] == featurize.quantize_encoder(cut)
    ops = [n.op_type for n in onnx.load_from_string(enc.files()["encoder.onnx"]).graph.node]
    assert ops.count("MultiHeadAttention") == ops.count("Gelu") == 2
    assert enc.manifest()["layers"] == 2
    assert "layers" not in featurize.build("minilm", 0).manifest()


def test_quantised_encoder_runs_in_int8_and_keeps_the_embeddings():
    import onnx

    full = ENCODER.read_bytes()
    quantized = featurize.quantize_encoder(full)
    graph = onnx.load_from_string(quantized).graph
    # Six products with a weight matrix in each of the six layers; each layer's attention
    # is one fused operator (fp32), so no product is left outside it.
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 36
    assert sum(n.op_type == "MultiHeadAttention" for n in graph.node) == 6
    assert sum(n.op_type == "Gelu" for n in graph.node) == 6
    assert not [n.name for n in graph.node if n.op_type in ("Erf", "Div")]
    assert not [n.name for n in graph.node if n.op_type == "MatMul"]
    assert not [n.name for n in graph.node if n.op_type in ("Softmax", "Transpose", "IsNaN")]
    assert "attention_mask" in {i for n in graph.node for i in n.input}
    assert featurize.quantize_encoder(full) == quantized, "deterministic"
    tokenizer = featurize.read_from_zip(MODEL_ZIP, "tokenizer.json")
    before = featurize.MiniLm(full, tokenizer)
    after = featurize.MiniLm(quantized, tokenizer)
    texts = ["What is the capital of France?", "How do I sort a list in Python?",
             "Explain the difference between TCP and UDP in two sentences.", "hi"]
    cos = np.sum(before(texts) * after(texts), axis=1)
    assert cos.min() > 0.98, cos


def test_fused_operators_keep_the_exported_graphs_output():
    import onnx
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folded = featurize.fold_constants(ENCODER.read_bytes())
    model = onnx.load_from_string(folded)
    featurize.fuse_attention(model)
    featurize.fuse_gelu(model)
    fused = model.SerializeToString()
    sessions = [ort.InferenceSession(g, providers=["CPUExecutionProvider"])
                for g in (folded, fused)]
    tokenizer = Tokenizer.from_str(
        featurize.read_from_zip(MODEL_ZIP, "tokenizer.json").decode("utf-8"))
    tokenizer.no_padding()
    for text in ["hi", "What is the capital of France? " * 20]:
        enc = tokenizer.encode(text)
        inputs = {"input_ids": np.array([enc.ids]),
                  "attention_mask": np.array([enc.attention_mask]),
                  "token_type_ids": np.array([enc.type_ids])}
        a, b = (s.run(None, inputs)[0] for s in sessions)
        np.testing.assert_allclose(a, b, atol=1e-4)
    # a padded batch: the mask still hides the padding from every real token
    ids = np.array([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    a, b = (s.run(None, inputs)[0] for s in sessions)
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-4)
    np.testing.assert_allclose(a[0, 3], b[0, 3], atol=1e-4)
    # a graph whose attention layers cannot be found is refused, not passed on unfused
    broken = onnx.load_from_string(folded)
    for t in broken.graph.initializer:
        t.name = t.name.replace("query", "q")
    with pytest.raises(ValueError, match="attention layers"):
        featurize.fuse_attention(broken)
