#!/usr/bin/env bash
# A profile-guided build of the data plane: the release profile, instrumented, serves the
# benchmarks' loads against the nginx mock upstream (bench/nginx.conf.in); its profile then
# guides a second release build, which lays out and inlines the code those loads run as
# hot. Prints the optimised binary's path. Figures: docs/benchmarks.md ("Profile-guided").
#
#   scripts/build-pgo.sh [seconds-per-load]      (default 5)
#
# The loads: chat through an OpenAI, an Anthropic and a Bedrock deployment (the realistic
# and the small body), the Responses API, chat answered from the response cache, and
# streamed chat and Messages from the built-in mock provider. Code no load runs (other
# providers, MCP, A2A, the learned strategies) is compiled as cold: it works the same,
# and may run somewhat slower than in the plain release build.
#
# Needs: nginx, wrk (Debian packages; installed if missing), rustup's llvm-tools
# component (added if missing; it is LLVM's own `llvm-profdata`, of rustc's LLVM).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SECONDS_PER_LOAD="${1:-5}"
apt_install nginx wrk
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$TRIPLE/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  step "rustup component add llvm-tools"
  rustup component add llvm-tools >&2
fi
PGO="$ROUTEIQ_CACHE/pgo"
rm -rf "$PGO/raw"
mkdir -p "$PGO/raw"

# `--target` keeps RUSTFLAGS off build scripts and proc macros; each build has its own
# target dir, as the flags change every crate's fingerprint.
step "cargo build --release, instrumented (-Cprofile-generate)"
RUSTFLAGS="-Cprofile-generate=$PGO/raw" CARGO_TARGET_DIR="$ROUTEIQ_CACHE/target-pgo-gen" \
  cargo build --release --locked --target "$TRIPLE" -p routeiq-dataplane >&2
GEN="$ROUTEIQ_CACHE/target-pgo-gen/$TRIPLE/release/routeiq-dataplane"

work="$(mktemp -d)"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
read -r NGINX_PORT GW_PORT < <(free_ports 2)
start_bench_upstream "$work" "$NGINX_PORT"

# A wrk script posting `body` to the gateway with `key`.
wrk_script() { # name key body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer %s"\nwrk.body = %s\n' \
    "$2" "'$3'" > "$work/$1.lua"
}
wrk_script stream sk-routeiq-example \
  '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in one short sentence, please."}]}'
wrk_script messages sk-routeiq-example \
  '{"model":"claude-sonnet","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence, please."}]}'

# Serves `config` with the instrumented gateway under each `path=script` load, then stops
# it with SIGTERM and waits, so that it writes its profile.
train() { # config path=script...
  local config="$1"
  shift
  sed -e "s#__PORT__#$NGINX_PORT#g" "$config" > "$work/config.yaml"
  ROUTEIQ_LOG=warn "$GEN" --config "$work/config.yaml" --listen "127.0.0.1:$GW_PORT" \
    >"$work/gw.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$work/gw.pid"
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$GW_PORT/health/liveliness" >/dev/null && break; sleep 0.05; done
  for load in "$@"; do
    step "training: $config ${load%%=*} ${load#*=}"
    wrk -t2 -c16 -d"${SECONDS_PER_LOAD}s" -s "${load#*=}" "http://127.0.0.1:$GW_PORT${load%%=*}" \
      | grep -E 'Requests/sec|Non-2xx' >&2 || true
  done
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$work/gw.pid"
}
chat=/v1/chat/completions
train bench/config.yaml.in "$chat=bench/chat-realistic.lua" "$chat=bench/chat.lua" \
  "/v1/responses=bench/responses.lua"
train bench/config-anthropic.yaml.in "$chat=bench/chat-realistic.lua"
train bench/config-bedrock.yaml.in "$chat=bench/chat-realistic.lua" "$chat=bench/chat.lua"
train bench/config-cache.yaml.in "$chat=bench/chat-realistic.lua"
train config/example.yaml "$chat=$work/stream.lua" "/v1/messages=$work/messages.lua"

step "llvm-profdata merge ($(ls "$PGO/raw" | wc -l) profiles)"
"$PROFDATA" merge -o "$PGO/merged.profdata" "$PGO/raw"

step "cargo build --release, optimised with the profile (-Cprofile-use)"
RUSTFLAGS="-Cprofile-use=$PGO/merged.profdata" CARGO_TARGET_DIR="$ROUTEIQ_CACHE/target-pgo" \
  cargo build --release --locked --target "$TRIPLE" -p routeiq-dataplane >&2
echo "$ROUTEIQ_CACHE/target-pgo/$TRIPLE/release/routeiq-dataplane"
