#!/usr/bin/env bash
# Make sure a headless Chromium is installed for the browser tests: Debian's
# `chromium` package (plus a font), with apt-get as root or through sudo.
#
#   scripts/install-chromium.sh        # no-op when chromium is already on PATH
#
# CL_CHROMIUM=/path/to/chrome points the tests at another build instead.
set -euo pipefail

if [ -n "${CL_CHROMIUM:-}" ] && [ -x "$CL_CHROMIUM" ]; then
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium.sh: error: no chromium on PATH and no apt-get to install it;" \
         "install Chromium and set CL_CHROMIUM" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "==> installing Debian's chromium package (browser tests)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >&2
command -v chromium >/dev/null
