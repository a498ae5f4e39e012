"""Fixtures for the end-to-end suite (``@pytest.mark.e2e``).

The suite runs only with ``OTEL_CALLBACKS_E2E=1``; then a Phoenix that cannot start is an
error, not a skip. Phoenix lives in its own venv: ``scripts/setup-phoenix-venv.sh``
(``PHOENIX_VENV`` chooses where; default ``<repo>/.venv-phoenix``).
"""

from __future__ import annotations

import os

import pytest

from .phoenix import PhoenixError, PhoenixServer, phoenix_venv

E2E_ENABLED = os.environ.get("OTEL_CALLBACKS_E2E") == "1"


def pytest_collection_modifyitems(config, items):
    if E2E_ENABLED:
        return
    skip = pytest.mark.skip(reason="end-to-end test: set OTEL_CALLBACKS_E2E=1 to run")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory):
    venv = phoenix_venv()
    executable = venv / "bin" / "phoenix"
    if not executable.exists():
        pytest.fail(
            f"OTEL_CALLBACKS_E2E=1 but {executable} does not exist: "
            "run scripts/setup-phoenix-venv.sh (or set PHOENIX_VENV)",
            pytrace=False,
        )
    server = PhoenixServer(executable=executable, working_dir=tmp_path_factory.mktemp("phoenix"))
    try:
        server.start()
    except PhoenixError as exc:
        pytest.fail(f"OTEL_CALLBACKS_E2E=1 but Phoenix did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def running_phoenix(phoenix):
    """The session's Phoenix, started again if an earlier test stopped it."""
    if not phoenix.is_up():
        phoenix.stop()
        phoenix.start()
    return phoenix


@pytest.fixture(scope="session")
def otel_handler_cls():
    try:
        from otel_callbacks import OTelHandler
    except ImportError as exc:  # pragma: no cover - only while the package is incomplete
        pytest.fail(f"cannot import otel_callbacks.OTelHandler: {exc}", pytrace=False)
    return OTelHandler
