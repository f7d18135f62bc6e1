"""ONNX export of the scikit-learn strategies, and scoring from the exported file.

The contract's graph has one input `features` (float32 `[N, dim]`) and one output
`scores` (float32 `[N, len(score_columns)]`). skl2onnx names them otherwise and adds
outputs the data plane does not read (a classifier's `label`), so after conversion the
score tensor is renamed `scores`, made the only output, and the nodes it does not depend
on are dropped.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper

INPUT = "features"
OUTPUT = "scores"
# Opsets every ONNX Runtime the data plane may load (1.16 and later) runs.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def convert(model, dim: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(model, initial_types=[(INPUT, FloatTensorType([None, dim]))],
                           target_opset=TARGET_OPSET)


def with_scores_output(model: onnx.ModelProto, tensor: str, n_columns: int,
                       producer: str) -> bytes:
    """`model` with `tensor` renamed `scores` as its only output, unused nodes dropped;
    the same model gives the same bytes."""
    graph = model.graph
    for node in graph.node:
        node.output[:] = [OUTPUT if name == tensor else name for name in node.output]
        node.input[:] = [OUTPUT if name == tensor else name for name in node.input]

    needed, kept = {OUTPUT}, []
    for node in reversed(graph.node):
        if needed & set(node.output):
            kept.append(node)
            needed |= set(node.input)
    kept.reverse()
    initializers = [t for t in graph.initializer if t.name in needed]

    dim = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    new_graph = helper.make_graph(
        kept, "routeiq_router",  # skl2onnx names graphs with a random UUID
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_columns])],
        initializer=initializers)
    opsets: dict[str, int] = {}  # skl2onnx may list a domain twice
    for opset in model.opset_import:
        opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    out = helper.make_model(new_graph, producer_name=producer, opset_imports=[
        helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())])
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out.SerializeToString()


def session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def scorer(params, files: dict[str, bytes], manifest: dict):
    """Scores from `model.onnx`: column `j` of `scores` is candidate `score_columns[j]`;
    candidates without a column are unscored (NaN)."""
    sess = session(files["model.onnx"])
    columns = np.asarray(manifest["score_columns"], dtype=np.int64)
    n_candidates = len(manifest["candidates"])

    def score(features: np.ndarray) -> np.ndarray:
        out = np.full((len(features), n_candidates), np.nan)
        if len(features):
            raw = sess.run([OUTPUT], {INPUT: np.ascontiguousarray(features, np.float32)})[0]
            out[:, columns] = raw.astype(np.float64)
        return out

    return score
