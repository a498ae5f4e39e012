#!/usr/bin/env bash
# CI steps for the deployment checks and the end-to-end suite (issues 4 and 14), each timed.
#   PYTHON         the dev venv's interpreter with otel-callbacks installed (default .venv/bin/python)
#   PHOENIX_VENV   where the Phoenix venv lives (default .venv-phoenix, see setup-phoenix-venv.sh)
#   PROMETHEUS_BIN the prometheus binary for the dashboard test (default: prometheus on PATH)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

step() {
    local name="$1"; shift
    local t0="$EPOCHREALTIME" rc=0
    echo "[ci-e2e] ${name}..."
    "$@" || rc=$?
    awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" -v rc="$rc" \
        'BEGIN { printf "[ci-e2e] %s: %.1fs (exit %d)\n", n, b - a, rc }'
    return "$rc"
}

install_docker_compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose already installed"; return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
    docker-compose version --short
}

# Debian's Prometheus: the dashboard e2e test starts its own on a free loopback port from a
# temporary config and stops it by pid; the package's own service is neither needed nor used.
install_prometheus() {
    if command -v prometheus >/dev/null 2>&1 || [ -n "${PROMETHEUS_BIN:-}" ]; then
        echo "prometheus already installed"; return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    prometheus --version 2>&1 | head -1
}

step "install docker-compose (apt)" install_docker_compose
step "install prometheus (apt)" install_prometheus
step "phoenix venv" bash scripts/setup-phoenix-venv.sh
step "deploy config tests" "$PYTHON" -m pytest tests/test_deploy_config.py tests/test_deploy_metrics.py tests/test_dashboard.py -q
step "e2e tests (Phoenix; dashboard queries on Prometheus)" env OTEL_CALLBACKS_E2E=1 "$PYTHON" -m pytest tests/e2e -m e2e -q -p no:cacheprovider
