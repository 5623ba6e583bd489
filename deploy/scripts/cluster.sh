#!/usr/bin/env bash
# Runs the cluster on this machine: nats-server with JetStream, the tool-runner, the knowledge
# service, the orchestrator on Postgres and one agent worker per role, each a `turbo-coder serve` process. Prints their addresses,
# then waits; Ctrl-C (or SIGTERM) stops them all. `make cluster` builds and runs it.
#
# The models come from your configuration, as for `turbo-coder run`: TURBO_HOST,
# OLLAMA_API_KEY, PLANNER_MODEL, OLLAMA_LOCAL, CODER_MODEL, TURBO_CODER__* variables, or a
# file named by TURBO_CODER_CONFIG.
#
# Variables (defaults in brackets):
#   TURBO_CODER        the binary [$CARGO_TARGET_DIR/debug/turbo-coder]
#   NATS_PORT          nats-server's client port [4222]
#   ORCHESTRATOR_ADDR  the orchestrator's gRPC address [127.0.0.1:50051]
#   DATABASE_URL       the store [postgres://postgres@127.0.0.1:5432/turbo_cluster, created if missing]
#   CLUSTER_DIR        nats-server's streams, the services' data directory and logs
#                      [~/.local/share/turbo-coder/cluster]
#   LOG                the services' log filter [info]
#   REPLICAS           agent workers per role [1]
set -euo pipefail

target=${CARGO_TARGET_DIR:-$HOME/.cache/turbo-coder/target}
bin=${TURBO_CODER:-$target/debug/turbo-coder}
nats_port=${NATS_PORT:-4222}
orchestrator_addr=${ORCHESTRATOR_ADDR:-127.0.0.1:50051}
dir=${CLUSTER_DIR:-$HOME/.local/share/turbo-coder/cluster}
replicas=${REPLICAS:-1}
[[ "$replicas" =~ ^[1-9][0-9]*$ ]] || { echo "cluster: REPLICAS=$replicas is not a positive whole number" >&2; exit 1; }
mkdir -p "$dir/logs"

[[ -x "$bin" ]] || { echo "cluster: $bin is missing: run \`make build\` (or set TURBO_CODER)" >&2; exit 1; }
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x "$nats_server" ]] || { echo "cluster: nats-server is missing: run \`make setup\`" >&2; exit 1; }

pids=()
stop() {
  trap - INT TERM EXIT
  ((${#pids[@]})) && printf '\ncluster: stopping\n'
  # The services first: they finish the work in flight, storing results and events on NATS;
  # nats-server once they are gone.
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do wait "${pids[i]}" 2>/dev/null || true; done
  if ((${#pids[@]})); then kill -TERM "${pids[0]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  exit "${1:-0}"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

# Waits until `file` has a first line and prints it; fails if process `pid` exits first.
first_line() {
  local file=$1 pid=$2 name=$3
  for _ in $(seq 1 300); do
    if [[ -s "$file" ]]; then head -n 1 "$file"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "cluster: $name exited; see $dir/logs/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "cluster: $name did not start; see $dir/logs/$name.log" >&2
  return 1
}

# NATS with JetStream, its streams kept in the cluster directory.
if (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; then
  echo "cluster: port $nats_port is taken (another nats-server?): set NATS_PORT to a free one" >&2
  exit 1
fi
"$nats_server" -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/nats" >"$dir/logs/nats-server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "cluster: nats-server exited; see $dir/logs/nats-server.log" >&2; exit 1; }
  sleep 0.1
done

# Postgres: the default database is created on first use.
if [[ -z "${DATABASE_URL:-}" ]]; then
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/turbo_cluster
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname = 'turbo_cluster'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database turbo_cluster' \
    || { echo "cluster: cannot reach Postgres at 127.0.0.1:5432: run \`make setup\` or set DATABASE_URL" >&2; exit 1; }
fi

export TURBO_CODER__CLUSTER__NATS_URL=nats://127.0.0.1:$nats_port
export TURBO_CODER__STORE__URL=$DATABASE_URL
export TURBO_CODER__STORE__DATA_DIR=$dir/data
export TURBO_CODER__TELEMETRY__LOG=${LOG:-info}

start() {
  local name=$1
  shift
  "$bin" serve "$@" >"$dir/logs/$name.out" 2>"$dir/logs/$name.log" &
  local pid=$!
  pids+=("$pid")
  local line
  line=$(first_line "$dir/logs/$name.out" "$pid" "$name")
  listening=${line##* }
  echo "  $line   (pid $pid, log $dir/logs/$name.log)"
}

echo "cluster: nats-server on nats://127.0.0.1:$nats_port, store $DATABASE_URL"
# The tool-runner first: the workers and the orchestrator run every tool call on it.
start tool-runner tool-runner --listen 127.0.0.1:0
export TURBO_CODER__CLUSTER__TOOL_RUNNER_URL=http://$listening
# The knowledge service: the agents retrieve their prompts' context from it.
start knowledge knowledge --listen 127.0.0.1:0
export TURBO_CODER__KNOWLEDGE__URL=http://$listening
for role in planner coder tester reviewer; do
  for i in $(seq 1 "$replicas"); do
    start "worker-$role-$i" agent-worker --role "$role" --listen 127.0.0.1:0
  done
done
start orchestrator orchestrator --listen "$orchestrator_addr"
cat <<EOF
cluster: running. Try:
  grpcurl -plaintext $listening list
  nats --server nats://127.0.0.1:$nats_port sub 'turbo.events.task.>'
Ctrl-C stops the cluster.
EOF
wait -n "${pids[@]}" || true
echo "cluster: a process exited; see the logs in $dir/logs" >&2
exit 1
