#!/usr/bin/env bash
# Make sure Debian's chromium is installed, for the web console's browser test
# (tests/admin/test_console.py, driven by playwright with the system browser).
#
# 1. If `chromium` is on PATH (or O16N_CHROMIUM names an executable), do nothing.
# 2. Otherwise, as root on a Debian-like host, install the `chromium` package with apt.
# 3. Otherwise say so and succeed: the browser test then skips, naming the reason.
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }

if [ -n "${O16N_CHROMIUM:-}" ] && [ -x "${O16N_CHROMIUM}" ]; then
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no chromium, and this script installs it only as root on Debian:"
    log "the web console's browser test will skip (install 'chromium' to run it)"
    exit 0
fi
log "installing chromium with apt-get (one time)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    log "apt-get could not install chromium: the web console's browser test will skip"
fi
exit 0
