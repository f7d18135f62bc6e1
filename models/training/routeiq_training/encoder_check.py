"""`encoder-check`: how close the int8 ONNX encoder's sentence embeddings are to fp32
all-MiniLM-L6-v2's, computed here by a plain numpy BERT forward pass. The encoder is the
one artifacts carry (the package's, quantised by `featurize.quantize_encoder`) unless
`--encoder` names a file.

The fp32 weights are read from `model.safetensors` directly (an 8-byte little-endian
header length, a JSON header of name -> dtype, shape and byte offsets, then the raw
tensors). Both sides use the same tokenizer, truncation and pooling (mean over all
tokens, L2-normalised), so the cosine measures the quantisation error alone.
"""

import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np

from . import featurize
from .data import heldout_mask

LAYERS = 6
HEADS = 12
LAYER_NORM_EPS = 1e-12
DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]]) \
            .reshape(info["shape"])
    return tensors


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf  # installed with scikit-learn
    except ImportError:
        return np.vectorize(math.erf)(x)
    return erf(x)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


def _dense(x: np.ndarray, t: dict, name: str) -> np.ndarray:
    return x @ t[name + ".weight"].T + t[name + ".bias"]


def bert_hidden(t: dict[str, np.ndarray], ids: list[int], type_ids: list[int]) -> np.ndarray:
    """The last hidden state [T, 384] of one unpadded sequence (`t`: float64 weights)."""
    n = len(ids)
    x = (t["embeddings.word_embeddings.weight"][ids]
         + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][type_ids])
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    hidden = x.shape[1]
    head = hidden // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q, k, v = (_dense(x, t, p + f"attention.self.{m}").reshape(n, HEADS, head)
                   .transpose(1, 0, 2) for m in ("query", "key", "value"))
        logits = q @ k.transpose(0, 2, 1) / math.sqrt(head)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        context = (weights @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = _layer_norm(x + _dense(context, t, p + "attention.output.dense"),
                        t[p + "attention.output.LayerNorm.weight"],
                        t[p + "attention.output.LayerNorm.bias"])
        inner = _dense(x, t, p + "intermediate.dense")
        inner = 0.5 * inner * (1 + _erf(inner / math.sqrt(2)))  # exact GELU
        x = _layer_norm(x + _dense(inner, t, p + "output.dense"),
                        t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
    return x


def sentences(data: Path, n: int) -> list[str]:
    rows = json.loads(Path(data).read_text(encoding="utf-8"))
    queries = [r.get("question", r.get("query")) for r in rows]
    held = [q for q, h in zip(queries, heldout_mask(queries)) if h]
    return held[::max(1, len(held) // n)][:n]


def run(data: Path, n: int = 50, encoder: Path | None = None, model_zip: Path | None = None,
        threads: int = 1) -> dict:
    if data is None:
        raise ValueError("encoder-check needs --data to take sentences from")
    model_zip = Path(model_zip or featurize.default_model_zip())
    with zipfile.ZipFile(model_zip) as z:
        weights = read_safetensors(z.read("model.safetensors"))
        tokenizer = z.read("tokenizer.json")
    encoder_bytes = Path(encoder).read_bytes() if encoder else \
        featurize.quantize_encoder(featurize.default_encoder_path().read_bytes())
    int8 = featurize.MiniLm(encoder_bytes, tokenizer, threads=threads)
    weights64 = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype != np.int64}
    cosines = []
    for text in sentences(data, n):
        enc = int8.tokenizer.encode(text)
        mean = bert_hidden(weights64, enc.ids, enc.type_ids).mean(axis=0)
        reference = mean / np.linalg.norm(mean)
        cosines.append(float(reference @ int8.embed(text).astype(np.float64)))
    return {"sentences": len(cosines), "cosine_min": min(cosines),
            "cosine_mean": float(np.mean(cosines)), "cosine_max": max(cosines)}
