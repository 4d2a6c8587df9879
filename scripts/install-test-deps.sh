#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, skipping what is already there:
#   kcat, python3-kafka  (Debian packages: independent Kafka clients for the interop test)
#   grpcio, grpcio-reflection, protobuf  (PyPI, into python3 on PATH: the generic gRPC client
#                        that calls salve's API through reflection; grpcurl has no Debian package)
#   python3-prometheus-client  (Debian: the Prometheus org's reference parsers, for the /metrics test)
#   libssl-dev, pkg-config  (Debian: OpenSSL for the cargo feature `tls`, which the suite builds)
#   tansu                (a standalone Kafka-protocol broker, from crates.io; ~10 min to build)
set -euo pipefail

TANSU_VERSION="0.6.0"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-test-deps: need root (or sudo) to run: $*" >&2; exit 1; fi
}

missing=()
command -v kcat >/dev/null || missing+=(kcat)
# salve's cargo feature `tls` builds librdkafka with OpenSSL.
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
/usr/bin/python3 -c 'import kafka' 2>/dev/null || missing+=(python3-kafka)
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || missing+=(python3-prometheus-client)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install-test-deps: please install ${missing[*]} (no apt-get here)" >&2; exit 1
  fi
  echo "install-test-deps: apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

grpc_modules='import grpc, grpc_reflection, google.protobuf'
if ! python3 -c "$grpc_modules" 2>/dev/null; then
  echo "install-test-deps: pip install grpcio grpcio-reflection protobuf"
  pip_install=(python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-reflection protobuf)
  # Debian's own python3 refuses pip installs outside a venv (PEP 668); a pyenv one does not.
  "${pip_install[@]}" 2>/dev/null || "${pip_install[@]}" --break-system-packages
  python3 -c "$grpc_modules"
fi

if ! command -v tansu >/dev/null || ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "install-test-deps: cargo install tansu $TANSU_VERSION (about 10 minutes on 2 cores)"
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore
fi
