#!/usr/bin/env bash
# Installs cargo-fuzz (the libFuzzer driver for Rust, used by scripts/fuzz.sh), idempotently, into
# a project-local directory, and prints the binary's path on stdout. Logs go to stderr.
#
# cargo-fuzz builds with `-Z sanitizer=...`, so it needs the nightly toolchain: this script checks
# that `rustup run nightly rustc` works and fails with a clear message otherwise (it does not
# install a toolchain).
#
# Env: CARGO_FUZZ_BIN (use this binary if it is executable), CARGO_FUZZ_ROOT (the `cargo install
#   --root`; default: <repo>/.tools/cargo-fuzz).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${CARGO_FUZZ_ROOT:-$repo/.tools/cargo-fuzz}
bin=$root/bin/cargo-fuzz
log() { echo "install-cargo-fuzz: $*" >&2; }

if ! nightly=$(rustup run nightly rustc --version 2>/dev/null); then
  log "the nightly Rust toolchain is missing (cargo fuzz needs it for -Z sanitizer)."
  log "install it with: rustup toolchain install nightly --profile minimal"
  exit 1
fi
log "toolchain: $nightly"

if [ -n "${CARGO_FUZZ_BIN:-}" ] && [ -x "$CARGO_FUZZ_BIN" ]; then
  echo "$CARGO_FUZZ_BIN"; exit 0
fi
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"; exit 0
fi

log "installing cargo-fuzz into $root (a few minutes: it is compiled from source)"
cargo install --locked cargo-fuzz --root "$root" >&2
[ -x "$bin" ] || { log "cargo install finished but $bin is missing"; exit 1; }
echo "$bin"
