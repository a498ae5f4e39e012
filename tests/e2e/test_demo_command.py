"""The README's command, `otel-callbacks demo` with OTEL_EXPORTER_OTLP_ENDPOINT, delivers one
well-formed trace to a real OTLP backend, over gRPC and over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .checks import RUN_ID, RUN_TYPE

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo_command() -> list[str]:
    script = Path(sys.executable).parent / "otel-callbacks"
    return [str(script)] if script.exists() else [sys.executable, "-m", "otel_callbacks.cli"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_demo_command_reaches_the_backend(protocol, running_phoenix):
    phoenix = running_phoenix
    endpoint = (f"http://{phoenix.otlp_grpc_endpoint}" if protocol == "grpc" else phoenix.base_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))

    before = {s["context"]["trace_id"] for s in phoenix.spans()}
    result = subprocess.run([*_demo_command(), "demo", "--color", "never"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    deadline = time.monotonic() + 30
    while True:
        new = [s for s in phoenix.spans() if s["context"]["trace_id"] not in before]
        if new or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    trace_ids = {s["context"]["trace_id"] for s in new}
    assert len(trace_ids) == 1, f"expected one new trace, got {len(trace_ids)}"
    spans = phoenix.wait_for_spans(trace_ids, len(new))  # let stragglers land

    span_ids = {s["context"]["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_id"] is None]
    assert len(roots) == 1, [r["name"] for r in roots]
    orphans = [s["name"] for s in spans if s["parent_id"] is not None and s["parent_id"] not in span_ids]
    assert not orphans, orphans
    assert len({s["attributes"][RUN_ID] for s in spans}) == len(spans)
    assert all(s["attributes"].get(RUN_TYPE) for s in spans)
    assert any(s["attributes"].get("gen_ai.operation.name") == "chat" for s in spans)
