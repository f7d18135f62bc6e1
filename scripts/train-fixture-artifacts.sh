#!/usr/bin/env bash
# Trains every learned strategy on the committed fixture data (tests/fixtures/llmrouter)
# into DIR/<strategy>/ (hashed n-gram features) and DIR/knn-minilm/ (the MiniLM encoder),
# and writes beside each artifact the pipeline's own scores and choices for the fixed
# parity queries (expected.json), which the Rust parity test and the end-to-end tests
# compare against, and DIR/mlp-concat/ (the three featurizers joined: hashed n-grams of
# 256 buckets, MiniLM and the structure measures). The personalised strategies (DIR/personalized/, DIR/gmt/) are trained
# with 3 simulated users (sim-0..sim-2) and their expected.json comes from
# parity_users.json ({"query", "user"} objects; rows also carry "user"). Every
# query-dependent artifact is calibrated (manifest "calibration" and "operating", and
# calibrated scores in expected.json) from 2 out-of-fold fits instead of the default 5,
# which is enough to exercise the data plane's calibration. Takes about 70 s (50 s without
# calibration, 90 s with 5 folds).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
out="$(realpath "${1:?usage: $0 DIR}")"
fixtures="$PWD/tests/fixtures/llmrouter"
pipeline() { (cd models/training && "$VENV/bin/python" -m routeiq_training "$@"); }
train() {
  pipeline train --data "$fixtures/routing_subset.json" --llm-data "$fixtures/llm_candidates.json" \
    --calibration-folds 2 "$@"
}
train --out "$out" --featurizer hashed-ngram
train --out "$out/minilm" --featurizer minilm --strategies knn
mv "$out/minilm/knn" "$out/knn-minilm"
rm -rf "$out/minilm"
train --out "$out/concat" --featurizer hashed-ngram+minilm+structure --dim 256 --strategies mlp
mv "$out/concat/mlp" "$out/mlp-concat"
rm -rf "$out/concat"
train --out "$out/personal" --featurizer hashed-ngram --strategies personalized,gmt --simulate-users 3
for s in personalized gmt; do
  rm -rf "${out:?}/$s" && mv "$out/personal/$s" "$out/$s"
done
rm -rf "$out/personal"
for dir in "$out"/*/; do
  case "$(basename "$dir")" in
    personalized | gmt) queries="$fixtures/parity_users.json" ;;
    *) queries="$fixtures/parity_queries.json" ;;
  esac
  pipeline parity --artifact "$dir" --queries "$queries" --out "$dir/expected.json"
done
