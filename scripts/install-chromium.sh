#!/usr/bin/env bash
# Installs Debian's `chromium`, which the status page's end-to-end test drives headless over the
# Chrome DevTools Protocol (tests/src/cdp.rs, tests/tests/status_page.rs), idempotently, and
# prints its path on stdout.
#
# It is a system package (apt, from the archive this machine's apt is already configured with:
# nothing is added to the system's sources). Installing needs root (or sudo without a password).
#
# Env: CHROMIUM_BIN (use this binary if it exists).
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

if [ -n "${CHROMIUM_BIN:-}" ] && [ -x "${CHROMIUM_BIN}" ]; then
  echo "$CHROMIUM_BIN"; exit 0
fi
if path=$(command -v chromium) && [ -n "$path" ]; then
  echo "$path"; exit 0
fi
if dpkg -s chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
  echo /usr/bin/chromium; exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  log "chromium is not installed and this user cannot install packages: run, as root,"
  log "  apt-get install -y --no-install-recommends chromium"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
install() { "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >&2; }
log "installing chromium (apt)"
if ! install; then
  # The package lists may be missing or out of date (a fresh container has none).
  log "apt-get install failed; updating the package lists and trying again"
  "${as_root[@]}" apt-get update -q >&2
  install
fi
path=$(command -v chromium) || { log "chromium was installed but is not on PATH"; exit 1; }
log "installed $("$path" --version 2>/dev/null || echo chromium) at $path"
echo "$path"
