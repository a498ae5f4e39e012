#!/usr/bin/env bash
# Create an isolated virtualenv holding Arize Phoenix, used only as an OTLP
# backend by the end-to-end tests (tests/e2e). Phoenix is never a dependency
# of otel-callbacks: it lives in its own venv so its (large) dependency tree
# cannot leak into, or conflict with, the package's environment.
#
# Usage: scripts/setup-phoenix-venv.sh
#   PHOENIX_VENV   target venv (default: <repo>/.venv-phoenix)
#   PHOENIX_SPEC   pip requirement for Phoenix (default: the version the e2e suite was
#                  written against; its REST span format is what tests/e2e/phoenix.py reads)
#   PYTHON         interpreter used to create the venv (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PHOENIX_VENV:-$repo_root/.venv-phoenix}"
spec="${PHOENIX_SPEC:-arize-phoenix==20.26.1}"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/phoenix" ]] && "$venv/bin/python" -m pip install --quiet --dry-run \
        --no-index --disable-pip-version-check "$spec" >/dev/null 2>&1; then
    echo "phoenix venv already satisfies $spec: $venv"
    exit 0
fi

echo "creating phoenix venv at $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"
"$venv/bin/python" -c 'import phoenix, sys; print("phoenix", getattr(phoenix, "__version__", "?"), "in", sys.prefix)'
test -x "$venv/bin/phoenix"
