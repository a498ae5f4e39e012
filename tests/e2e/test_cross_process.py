"""W3C context across two processes: A's tool calls B over HTTP; B continues A's trace, and the
conversation A set (use_conversation, as W3C baggage) is on B's spans too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .checks import RUN_ID, RUN_TYPE

CONVERSATION_ID = "gen_ai.conversation.id"
SESSION_ID = "session.id"
USER_ID = "user.id"

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def _env() -> dict[str, str]:
    # The child processes import otel_callbacks from this checkout, like the test process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def service_b(running_phoenix):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "service_b.py"), running_phoenix.otlp_http_endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            pytest.fail(f"service B did not start: {proc.stderr.read()}")
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        proc.stdout.close()
        proc.stderr.close()


def test_trace_continues_in_the_called_process(running_phoenix, service_b):
    phoenix = running_phoenix
    conversation, user = f"conv-{uuid.uuid4()}", "user-e2e-7"
    result = subprocess.run(
        [sys.executable, str(HERE / "service_a.py"), phoenix.otlp_http_endpoint, service_b,
         conversation, user],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["answer"] == "Rain until noon."
    assert out["sent_headers"] and "traceparent" in out["sent_headers"], out["sent_headers"]

    (tool_run_id,) = [rid for rid, r in out["runs"].items() if r["type"] == "tool"]
    a_root_id = out["root_run_id"]
    b_root_id = out["reply"]["root_run_id"]

    traceparent = out["sent_headers"]["traceparent"]
    version, trace_id, parent_span_id, flags = traceparent.split("-")
    assert out["reply"]["received_traceparent"] == traceparent

    def complete(spans):
        ids = {s["attributes"].get(RUN_ID) for s in spans}
        # A: app + tool; B: sequence + prompt + model + parser.
        return {a_root_id, tool_run_id, b_root_id} <= ids and len(spans) >= 6

    spans = phoenix.wait_for_spans([trace_id], complete)
    by_run = {s["attributes"][RUN_ID]: s for s in spans}
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}, "one trace across both processes"

    a_root, a_tool, b_root = by_run[a_root_id], by_run[tool_run_id], by_run[b_root_id]
    assert a_root["parent_id"] is None
    assert a_tool["parent_id"] == a_root["context"]["span_id"]
    assert a_tool["name"] == "execute_tool ask_service_b"
    assert a_tool["attributes"][RUN_TYPE] == "tool"
    # What A injected is its tool span, and B's root hangs under it.
    assert parent_span_id == a_tool["context"]["span_id"]
    assert b_root["parent_id"] == a_tool["context"]["span_id"]
    assert b_root["name"] == "service_b_chain"
    # B's own runs nest under B's root.
    b_children = [s for s in spans if s["parent_id"] == b_root["context"]["span_id"]]
    assert {s["attributes"][RUN_TYPE] for s in b_children} == {"chain", "chat_model"}
    assert len(spans) == 6, sorted(s["name"] for s in spans)

    # The conversation A set crossed the hop as baggage: every span of both processes has it.
    assert conversation in out["sent_headers"].get("baggage", ""), out["sent_headers"]
    for span in sorted(spans, key=lambda s: s["start_time"]):
        attributes = span["attributes"]
        print(f"{span['name']:<32} {attributes.get(RUN_TYPE):<11} "
              f"{CONVERSATION_ID}={attributes.get(CONVERSATION_ID)} {USER_ID}={attributes.get(USER_ID)}")
        assert attributes.get(CONVERSATION_ID) == conversation, span["name"]
        assert attributes.get(SESSION_ID) == conversation, span["name"]
        assert attributes.get(USER_ID) == user, span["name"]
