#!/usr/bin/env bash
# Make sure Debian's chromium is installed, for the HTML report's headless-browser test.
# Idempotent and quiet: does nothing when /usr/bin/chromium exists. Needs root (CI runs as root);
# without root or apt-get it says so and exits 0, and the browser test skips with that reason.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: /usr/bin/chromium is missing and cannot be installed here (needs" \
         "root and apt-get); the report's browser test will be skipped." >&2
    exit 0
fi
echo "ensure_chromium: installing Debian's chromium (once) for the report's browser test" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
        >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "ensure_chromium: apt-get could not install chromium; the browser test will skip." >&2
fi
exit 0
