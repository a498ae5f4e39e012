"""The package imports and traces with langchain-core absent (import blocked in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["langchain_core"] = None  # any import of it now raises ImportError
    sys.modules["langgraph"] = None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import otel_callbacks
    from otel_callbacks import CallbackManager, OTelHandler, run_context
    from otel_callbacks.handlers import HAS_LANGCHAIN

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    manager = CallbackManager.configure([OTelHandler(tracer_provider=provider)])
    run = manager.on_chain_start({"name": "pipeline"}, {})
    with run_context(run):
        with tracer.start_as_current_span("work"):
            pass
    (llm,) = run.get_child().on_llm_start({"name": "m"}, ["p"])
    llm.on_llm_end({"generations": []})
    run.on_chain_end({})
    spans = exporter.get_finished_spans()
    ids = {s.context.span_id: s.name for s in spans}
    print(json.dumps({
        "has_langchain": HAS_LANGCHAIN,
        "langchain_loaded": any(m.startswith("langchain_core.") for m in sys.modules),
        "tree": {s.name: ids.get(s.parent.span_id) if s.parent else None for s in spans},
    }))
""")


def test_own_manager_without_langchain() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["has_langchain"] is False
    assert report["langchain_loaded"] is False
    assert report["tree"] == {"work": "pipeline", "text_completion m": "pipeline", "pipeline": None}
