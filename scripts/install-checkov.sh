#!/usr/bin/env bash
# Install checkov (the Terraform security scanner) into its own virtualenv.
#
# checkov pulls in a large dependency tree (its own boto3, etc.) that can
# conflict with the project's pins, so it lives in .venv-checkov, apart from
# the project's .venv. Idempotent: does nothing when the pinned version is
# already installed. tests/test_terraform.py runs .venv-checkov/bin/checkov.
#
# Usage: scripts/install-checkov.sh [VENV_DIR]   (default: .venv-checkov)
# Env:   PYTHON (interpreter to create the venv with, default python3)
set -euo pipefail

CHECKOV_VERSION="3.3.30"
cd "$(dirname "$0")/.."
VENV="${1:-.venv-checkov}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/checkov" ] \
    && [ "$("$VENV/bin/python" -m pip show checkov 2>/dev/null | sed -n 's/^Version: //p')" = "$CHECKOV_VERSION" ]; then
    echo "[install-checkov] checkov $CHECKOV_VERSION already in $VENV"
    exit 0
fi

echo "[install-checkov] creating $VENV and installing checkov==$CHECKOV_VERSION ..."
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
"$VENV/bin/checkov" --version >/dev/null
echo "[install-checkov] checkov $("$VENV/bin/checkov" --version) installed in $VENV"
