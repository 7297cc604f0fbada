#!/usr/bin/env bash
# Installs the Python packages the tests use (grpcio, for the gRPC end-to-end test: a real gRPC
# server and client; schemathesis, for the API test that runs it against the gateway with
# docs/api/openapi.yaml), idempotently, into a project-local virtual environment, and prints the
# path of its python on stdout.
#
# Env: GRPC_PYTHON (use this interpreter if it can import grpc and schemathesis), PYTHON_DEPS_DIR (the venv;
#   default: <repo>/.tools/pyenv), PYTHON (the interpreter that makes the venv; default python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PYTHON_DEPS_DIR:-$repo/.tools/pyenv}
# Pinned: the tests were written against these versions.
packages=(grpcio==1.85.1 schemathesis==4.32.5)

log() { echo "install-python-deps: $*" >&2; }
has_deps() { "$1" -c 'import grpc, schemathesis' >/dev/null 2>&1; }
# Both at the pinned versions.
pinned() {
  "$1" -c 'import grpc, sys; from importlib.metadata import version as v
sys.exit(grpc.__version__ != "1.85.1" or v("schemathesis") != "4.32.5")' >/dev/null 2>&1
}

if [ -n "${GRPC_PYTHON:-}" ] && has_deps "$GRPC_PYTHON"; then
  echo "$GRPC_PYTHON"; exit 0
fi
py=$venv/bin/python
if [ -x "$py" ] && pinned "$py"; then
  echo "$py"; exit 0
fi
if ! "${PYTHON:-python3}" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  log "${PYTHON:-python3} cannot make a virtual environment: installing python3-venv"
  apt-get install -y -q python3-venv >&2
fi
if [ ! -x "$py" ]; then
  log "making a virtual environment at $venv"
  "${PYTHON:-python3}" -m venv "$venv" >&2
fi
log "installing ${packages[*]}"
"$py" -m pip install -q "${packages[@]}" >&2
has_deps "$py" || { log "grpc or schemathesis does not import after the install"; exit 1; }
log "grpcio $("$py" -c 'import grpc; print(grpc.__version__)'), schemathesis $("$py" -m schemathesis --version 2>/dev/null | tr -d '\n') at $py"
echo "$py"
