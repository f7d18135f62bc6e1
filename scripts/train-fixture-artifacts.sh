#!/usr/bin/env bash
# Trains every learned strategy on the committed fixture data (tests/fixtures/llmrouter)
# into DIR/<strategy>/ (hashed n-gram features) and DIR/knn-minilm/ (the MiniLM encoder),
# and writes beside each artifact the pipeline's own scores and choices for the fixed
# parity queries (expected.json), which the Rust parity test and the end-to-end tests
# compare against. Takes about 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
out="$(realpath "${1:?usage: $0 DIR}")"
fixtures="$PWD/tests/fixtures/llmrouter"
pipeline() { (cd models/training && "$VENV/bin/python" -m routeiq_training "$@"); }
train() {
  pipeline train --data "$fixtures/routing_subset.json" --llm-data "$fixtures/llm_candidates.json" "$@"
}
train --out "$out" --featurizer hashed-ngram
train --out "$out/minilm" --featurizer minilm --strategies knn
mv "$out/minilm/knn" "$out/knn-minilm"
rm -rf "$out/minilm"
for dir in "$out"/*/; do
  pipeline parity --artifact "$dir" --queries "$fixtures/parity_queries.json" --out "$dir/expected.json"
done
