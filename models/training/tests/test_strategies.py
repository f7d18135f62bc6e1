"""Every strategy trains on the fixture, and its artifact, loaded from disk, scores like
the in-memory model it was exported from."""

import hashlib
import json
import re
import shutil

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from routeiq_training import artifact, evaluation, parity, train
from routeiq_training.choice import pick
from routeiq_training.data import heldout_mask, load_table
from routeiq_training.strategies import QUERY_INDEPENDENT, STRATEGIES

ALL = list(STRATEGIES)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, fixture_paths):
    out = tmp_path_factory.mktemp("artifacts")
    data, llms = fixture_paths
    summary, in_memory = train.run(data, llms, out, ALL, "hashed-ngram", 1024, seed=0,
                                     calibration_folds=0)
    return out, summary, in_memory


@pytest.fixture(scope="session")
def probe_queries(fixture_paths):
    table = load_table(*fixture_paths)
    held = [q for q, h in zip(table.queries, heldout_mask(table.queries)) if h]
    return held + json.loads((FIXTURES / "parity_queries.json").read_text())


def _margin(scores: np.ndarray) -> np.ndarray:
    """Per row, the gap between the best and second-best scored candidate."""
    s = np.sort(np.where(np.isnan(scores), -np.inf, scores), axis=1)
    return s[:, -1] - s[:, -2]


@pytest.mark.parametrize("strategy", ALL)
def test_artifact_reproduces_the_in_memory_model(trained, probe_queries, strategy):
    out, _, in_memory = trained
    router = artifact.load(out / strategy)
    features = router.features(probe_queries)
    from_files = router.score_features(features)
    reference = in_memory[strategy].reference(features)

    assert np.array_equal(np.isnan(from_files), np.isnan(reference))
    scored = ~np.isnan(reference)
    np.testing.assert_allclose(from_files[scored], reference[scored], rtol=1e-4, atol=1e-4)
    # float32 export may swap near-ties; exact ties go the same way by the choice rule
    margin = _margin(reference)
    clear = (margin > 1e-4) | (margin == 0)
    assert clear.mean() > 0.9
    assert np.array_equal(pick(from_files, router.prices)[clear],
                          pick(reference, router.prices)[clear])


@pytest.mark.parametrize("strategy", ALL)
def test_manifest_lists_every_file_with_its_hash(trained, strategy):
    out, _, _ = trained
    directory = out / strategy
    manifest = json.loads((directory / "manifest.json").read_text())
    on_disk = {p.name for p in directory.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
    data_sha = hashlib.sha256((FIXTURES / "routing_subset.json").read_bytes()).hexdigest()
    assert manifest["training_data_sha256"] == data_sha
    assert re.fullmatch(rf"{strategy}-\d{{8}}T\d{{6}}-{data_sha[:8]}", manifest["version"])
    assert manifest["format"] == "routeiq-router/1" and manifest["strategy"] == strategy
    names = [c["name"] for c in manifest["candidates"]]
    assert names == sorted(names) and len(names) == 9
    if strategy in QUERY_INDEPENDENT:
        assert manifest["featurizer"] is None
    else:
        assert manifest["featurizer"] == {"name": "hashed-ngram", "version": 1, "dim": 1024}
    assert 0 < manifest["metrics"]["accuracy"] <= 1
    assert all(isinstance(v, (int, float)) for v in manifest["metrics"].values())


def test_file_layout_per_strategy(trained):
    out, _, _ = trained
    files = {s: set(json.loads((out / s / "manifest.json").read_text())["files"]) for s in ALL}
    assert files["knn"] == {"params.json", "knn.f32"}
    assert files["svm"] == files["mlp"] == {"model.onnx"}
    for s in ("mf", "graph", "routerdc", "elo", "hybrid"):
        assert files[s] == {"params.json"}
    assert files["smallest"] == files["largest"] == set()
    knn = json.loads((out / "knn" / "params.json").read_text())
    width = len(knn["projection"]) if "projection" in knn else 1024
    assert (out / "knn" / "knn.f32").stat().st_size == len(knn["labels"]) * width * 4
    mf = json.loads((out / "mf" / "params.json").read_text())
    assert np.array(mf["W"]).shape == (64, 1024) and np.array(mf["P"]).shape == (9, 64)
    graph = json.loads((out / "graph" / "params.json").read_text())
    assert np.array(graph["H"]).shape == (9, 64) and len(graph["b"]) == 9
    routerdc = json.loads((out / "routerdc" / "params.json").read_text())
    assert set(routerdc) == {"W", "H"} and np.array(routerdc["W"]).shape == (64, 1024)
    h = np.array(routerdc["H"])
    assert h.shape == (9, 64)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1, atol=1e-6)  # unit rows
    hybrid = json.loads((out / "hybrid" / "params.json").read_text())
    assert set(hybrid) == {"small", "large", "coef", "intercept", "threshold"}


@pytest.mark.parametrize("strategy", ["svm", "mlp"])
def test_onnx_models_take_features_and_give_scores(trained, strategy):
    out, _, _ = trained
    model = onnx.load(str(out / strategy / "model.onnx"))
    manifest = json.loads((out / strategy / "manifest.json").read_text())
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["scores"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 1024 and model.graph.input[0].type.tensor_type.elem_type == 1
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == len(manifest["score_columns"])
    if strategy == "mlp":
        assert manifest["score_columns"] == list(range(9))


def test_an_altered_or_missing_file_is_refused(trained, tmp_path):
    out, _, _ = trained
    copy = tmp_path / "knn"
    shutil.copytree(out / "knn", copy)
    params = copy / "params.json"
    params.write_bytes(params.read_bytes().replace(b'"k":', b'"k" :'))
    with pytest.raises(artifact.InvalidArtifact, match="SHA-256"):
        artifact.load(copy)
    params.unlink()
    with pytest.raises(artifact.InvalidArtifact, match="missing"):
        artifact.load(copy)


def test_parity_rows(trained, tmp_path):
    out, _, _ = trained
    queries_file = FIXTURES / "parity_queries.json"
    queries = json.loads(queries_file.read_text())
    assert len(queries) == 40
    for strategy in ("hybrid", "svm", "knn"):
        target = tmp_path / f"{strategy}.json"
        parity.run(out / strategy, queries_file, target)
        rows = json.loads(target.read_text())
        assert [r["query"] for r in rows] == queries
        for r in rows:
            assert len(r["scores"]) == 9
            scored = [(s, i) for i, s in enumerate(r["scores"]) if s is not None]
            assert r["scores"][r["choice"]] == max(s for s, _ in scored)
        if strategy == "hybrid":
            assert sum(s is None for s in rows[0]["scores"]) == 7


def test_training_is_deterministic(fixture_paths, tmp_path):
    data, llms = fixture_paths
    cheap = ["knn", "svm", "elo", "hybrid"]
    train.run(data, llms, tmp_path / "a", cheap, "hashed-ngram", 256, seed=0, calibration_folds=0)
    train.run(data, llms, tmp_path / "b", cheap, "hashed-ngram", 256, seed=0, calibration_folds=0)
    for s in cheap:
        a = json.loads((tmp_path / "a" / s / "manifest.json").read_text())
        b = json.loads((tmp_path / "b" / s / "manifest.json").read_text())
        assert a["files"] == b["files"] and a["metrics"] == b["metrics"]


def test_eval_report(trained, fixture_paths, tmp_path):
    out, summary, _ = trained
    report = evaluation.run(*fixture_paths, out, tmp_path / "report")
    assert set(report["strategies"]) == set(ALL)
    for s in ALL:  # eval from disk agrees with train's own held-out metrics
        assert report["strategies"][s]["accuracy"] == pytest.approx(
            summary["strategies"][s]["metrics"]["accuracy"])
    base = report["baselines"]
    assert base["oracle"]["accuracy"] >= max(m["accuracy"] for m in base["single_models"].values())
    assert base["best_single"]["model"] == "llama-3.1-nemotron-51b-instruct"
    assert base["cheapest"]["model"] == "gemma-2-9b-it"
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.startswith("# Routing evaluation\n\n## Metric definitions")
    assert "| hybrid | hashed-ngram |" in md
