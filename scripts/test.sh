#!/usr/bin/env bash
# The whole test suite: unit, golden replay, CLI, and integration tests against two brokers,
# librdkafka's mock cluster (in-process) and a standalone Tansu broker over TCP.
# Installs what it needs first (see install-test-deps.sh). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-test-deps.sh

tansu_log=$(mktemp)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$tansu_log" 2>&1 &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null || true; rm -f "$tansu_log"' EXIT
for _ in $(seq 1 100); do
  grep -q "ready" "$tansu_log" && break
  kill -0 $tansu_pid 2>/dev/null || { cat "$tansu_log" >&2; echo "tansu did not start" >&2; exit 1; }
  sleep 0.1
done

export SALVE_REQUIRE_INTEROP=1

# Every invocation selects the same packages and features, so cargo builds the dependencies once:
# a narrower `-p` or feature set would resolve features differently and build them all again.
# The Kubernetes actuator (cargo feature k8s) is tested against a stand-in API server, and
# the TLS build (cargo feature tls) by its configuration checks.
features=(--workspace --features salve/k8s,salve/tls)

echo "== the whole workspace, integration tests on librdkafka's mock cluster"
cargo test "${features[@]}" "$@"

# Every integration test that talks to a broker runs here too; `demo` is left out, since the
# demo always starts its own embedded broker.
echo "== integration tests, and salve killed with SIGKILL and restarted, on Tansu at 127.0.0.1:$port"
SALVE_TEST_BROKERS="127.0.0.1:$port" cargo test "${features[@]}" \
  --test broker --test interop --test actuators --test kill \
  --test operate --test reload --test hangup "$@"

echo "== the throughput and latency benchmarks, briefly, on Tansu at 127.0.0.1:$port"
SALVE_TEST_BROKERS="127.0.0.1:$port" cargo test "${features[@]}" \
  --test smoke "$@" -- external_broker
