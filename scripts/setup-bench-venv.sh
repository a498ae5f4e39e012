#!/usr/bin/env bash
# Create the benchmark-only virtualenv (default: <repo>/.venv-bench).
#
# The peer instrumentations (OpenLLMetry's opentelemetry-instrumentation-langchain
# and Arize's openinference-instrumentation-langchain) are installed ONLY here:
# they are never dependencies of otel-callbacks itself.
#
# Usage: scripts/setup-bench-venv.sh [VENV_DIR]
#   PYTHON=python3.11 scripts/setup-bench-venv.sh      # choose the interpreter
#   BENCH_NO_PEERS=1 scripts/setup-bench-venv.sh       # skip the two peers
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-bench}"
PY="${PYTHON:-python3}"

# Versions the harness was last run with (langchain-core 1.8 line).  Bump
# deliberately; record new pins in benchmarks/README.md.
LANGCHAIN_CORE="${LANGCHAIN_CORE:-langchain-core>=1.8,<1.9}"
LANGGRAPH="${LANGGRAPH:-langgraph>=1.2,<2}"
OTEL_SDK="${OTEL_SDK:-opentelemetry-sdk>=1.27}"
OPENLLMETRY="${OPENLLMETRY:-opentelemetry-instrumentation-langchain==0.62.4}"
OPENINFERENCE="${OPENINFERENCE:-openinference-instrumentation-langchain==0.1.80}"
# The OTLP receiver benchmarks.load starts on loopback (a collector shipped as a binary wheel).
ROTEL="${ROTEL:-rotel==0.0.1a15}"

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# pip here warns once per package about absent local index folders; keep real errors.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

quiet "${PIP[@]}" install --upgrade pip >/dev/null
quiet "${PIP[@]}" install "$LANGCHAIN_CORE" "$LANGGRAPH" "$OTEL_SDK"
if [[ -z "${BENCH_NO_PEERS:-}" ]]; then
    # Installed together with langchain-core's pin so the resolver cannot move it.
    quiet "${PIP[@]}" install "$LANGCHAIN_CORE" "$OPENLLMETRY" "$OPENINFERENCE"
fi
quiet "${PIP[@]}" install "$ROTEL" || echo "warning: rotel did not install; benchmarks.load uses its counting receiver" >&2
# Our package, editable, so the benchmark always measures the working tree.
quiet "${PIP[@]}" install -e "$REPO" || {
    echo "warning: 'pip install -e $REPO' failed; the otel_callbacks variant will be skipped" >&2
}

# From / so a stray otel_callbacks.egg-info in the repo cannot answer for the install.
(cd / && "$VENV/bin/python" - <<'PY'
from importlib import metadata
for name in ("langchain-core", "langgraph", "opentelemetry-api", "opentelemetry-sdk",
             "opentelemetry-instrumentation-langchain", "openinference-instrumentation-langchain",
             "opentelemetry-semantic-conventions-ai", "openinference-semantic-conventions",
             "rotel", "otel-callbacks"):
    try:
        print(f"  {name:45s} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"  {name:45s} (not installed)")
PY
)
echo "bench venv ready at $VENV in $(( $(date +%s) - start ))s"
