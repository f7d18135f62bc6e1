//! Routing-model artifacts against the Python pipeline that trained them.
//!
//! `scripts/test.sh` trains every strategy on the committed fixture data into
//! `ROUTEIQ_TEST_ARTIFACTS` and writes, beside each artifact, the pipeline's own scores and
//! choices for a fixed query set (`expected.json`). Each artifact must load here, and give
//! the same scores (within float tolerance) and the same choices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use routeiq_dataplane::routing::learned::artifact::{self, Featurizer, Files, Model};
use routeiq_dataplane::routing::learned::featurize;

/// Scores may differ by float summation order; choices may differ only between near-ties.
const TOLERANCE: f32 = 1e-4;

fn artifacts() -> PathBuf {
    PathBuf::from(std::env::var("ROUTEIQ_TEST_ARTIFACTS").expect(
        "ROUTEIQ_TEST_ARTIFACTS is not set: run the tests through scripts/test.sh, which trains the fixture artifacts",
    ))
}

fn load(dir: &Path) -> Result<Model, String> {
    let raw = std::fs::read(dir.join(artifact::MANIFEST)).map_err(|e| e.to_string())?;
    let manifest = artifact::manifest(&raw).map_err(|e| e.to_string())?;
    let mut files = HashMap::new();
    for name in manifest.files.keys() {
        files.insert(
            name.clone(),
            std::fs::read(dir.join(name)).map_err(|e| e.to_string())?,
        );
    }
    let files = Files::verified(&manifest, files).map_err(|e| e.to_string())?;
    Model::build(manifest, artifact::sha256_hex(&raw), files).map_err(|e| e.to_string())
}

fn features(featurizer: &Featurizer, query: &str) -> Vec<f32> {
    match featurizer {
        Featurizer::None => Vec::new(),
        Featurizer::Hashed(h) => h.features(query),
        Featurizer::Encoder(e) => e.embed_now(query).unwrap().to_vec(),
        Featurizer::Structure => featurize::structure(query).to_vec(),
        Featurizer::Concat(parts) => {
            let mut v: Vec<f32> = parts.iter().flat_map(|p| features(p, query)).collect();
            featurize::normalise(&mut v);
            v
        }
    }
}

#[derive(serde::Deserialize)]
struct Expected {
    query: String,
    #[serde(default)]
    user: Option<String>,
    scores: Vec<Option<f32>>,
    choice: usize,
}

#[test]
fn every_artifact_matches_the_pipeline() {
    let root = artifacts();
    let mut checked = Vec::new();
    let mut concat_parts = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let expected = dir.join("expected.json");
        if !expected.exists() {
            continue;
        }
        let model = load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let rows: Vec<Expected> =
            serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
        assert!(!rows.is_empty());
        for row in &rows {
            let scores = model
                .scores(
                    &features(&model.featurizer, &row.query),
                    row.user.as_deref(),
                )
                .unwrap();
            assert_eq!(scores.len(), row.scores.len());
            for (i, (got, want)) in scores.iter().zip(&row.scores).enumerate() {
                match (got, want) {
                    (Some(g), Some(w)) => assert!(
                        (g - w).abs() <= TOLERANCE * w.abs().max(1.0),
                        "{} candidate {i} on {:?}: {g} vs {w}",
                        model.strategy(),
                        row.query
                    ),
                    (None, None) => {}
                    _ => panic!(
                        "{} candidate {i}: scored {got:?} vs {want:?}",
                        model.strategy()
                    ),
                }
            }
            let best = row.scores[row.choice].unwrap();
            let ours = scores
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|s| (i, s)))
                .fold(None::<(usize, f32)>, |b, (i, s)| match b {
                    Some((_, bs)) if bs >= s => b,
                    _ => Some((i, s)),
                })
                .unwrap();
            assert!(
                ours.0 == row.choice || (ours.1 - best).abs() <= TOLERANCE,
                "{} chose {} for {:?}, the pipeline {}",
                model.strategy(),
                ours.0,
                row.query,
                row.choice
            );
        }
        // The pipeline calibrates every query-dependent strategy but the personalised ones,
        // and validates its operating points (`--calibration-folds`): the scores compared
        // above are then probabilities.
        let calibrated = !matches!(model.featurizer, Featurizer::None)
            && !["personalized", "gmt"].contains(&model.strategy());
        assert_eq!(
            model.manifest.calibration.is_some() && model.operating.is_some(),
            calibrated,
            "{}: calibration and operating points",
            model.strategy()
        );
        if let Featurizer::Concat(parts) = &model.featurizer {
            concat_parts = parts.len();
        }
        checked.push(model.strategy().to_owned());
    }
    // One artifact joins all three featurizers (`hashed-ngram+minilm+structure`).
    assert_eq!(concat_parts, 3, "no concat artifact checked");
    checked.sort();
    for s in [
        "elo", "graph", "hybrid", "knn", "largest", "mf", "mlp", "smallest", "svm",
    ] {
        assert!(
            checked.iter().any(|c| c == s),
            "no {s} artifact checked: {checked:?}"
        );
    }
}

#[test]
fn a_tampered_artifact_is_refused() {
    let root = artifacts();
    let src = root.join("knn");
    let raw = std::fs::read(src.join(artifact::MANIFEST)).unwrap();
    let manifest = artifact::manifest(&raw).unwrap();
    let mut files: HashMap<String, Vec<u8>> = manifest
        .files
        .keys()
        .map(|n| (n.clone(), std::fs::read(src.join(n)).unwrap()))
        .collect();
    assert!(Files::verified(&manifest, files.clone()).is_ok());
    let params = files.get_mut("params.json").unwrap();
    params[0] ^= 1;
    let err = Files::verified(&manifest, files.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("params.json") && err.contains("sha256"),
        "{err}"
    );
    files.remove("params.json");
    let err = Files::verified(&manifest, files).err().unwrap().to_string();
    assert!(err.contains("missing"), "{err}");
}
