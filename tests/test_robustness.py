"""Nothing lost, nothing leaked: bad input, odd order, runs that never end, secrets."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_callbacks import OTelHandler
from tests.conftest import Tracing

STARTS = ("on_chain_start", "on_llm_start", "on_chat_model_start", "on_tool_start",
          "on_retriever_start")
ENDS = ("on_chain_end", "on_llm_end", "on_tool_end", "on_retriever_end")
ERRORS = ("on_chain_error", "on_llm_error", "on_tool_error", "on_retriever_error")
EVENTS = ("on_llm_new_token", "on_text", "on_retry", "on_agent_action", "on_agent_finish",
          "on_custom_event")

odd_values = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50), st.binary(max_size=20),
    st.lists(st.integers(), max_size=5), st.dictionaries(st.text(max_size=8), st.integers(), max_size=4),
    st.just(object()), st.just(float("inf")))


def call(handler: OTelHandler, event: str, run_id: uuid.UUID, parent: uuid.UUID | None,
         value: Any) -> None:
    kwargs: dict[str, Any] = {"run_id": run_id, "parent_run_id": parent}
    if event in STARTS:
        payload = [[value]] if event == "on_chat_model_start" else ([str(value)] if event == "on_llm_start" else value)
        getattr(handler, event)(value if isinstance(value, dict) else None, payload,
                                tags=[str(value)] if value is not None else None,
                                metadata={"k": value} if value is not None else None, **kwargs)
    elif event in ERRORS:
        getattr(handler, event)(RuntimeError(str(value)), **kwargs)
    elif event == "on_custom_event":
        handler.on_custom_event("evt", value, **kwargs)
    elif event == "on_llm_new_token":
        handler.on_llm_new_token(value, **kwargs)
    else:
        getattr(handler, event)(value, **kwargs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(STARTS + ENDS + ERRORS + EVENTS),
                          st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6)), odd_values),
                max_size=60))
def test_random_event_sequences_never_raise_and_end_every_span(events: list[Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    started: list[Any] = []

    class Counting(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            started.append(span)

    provider.add_span_processor(Counting(InMemorySpanExporter()))
    handler = OTelHandler(tracer_provider=provider, max_open_runs=4)
    ids = [uuid.UUID(int=i + 1) for i in range(7)]
    for event, run, parent, value in events:
        call(handler, event, ids[run], ids[parent] if parent is not None else None, value)
    handler.close()
    assert all(span.end_time is not None for span in started)  # every started span ended
    assert len(exporter.get_finished_spans()) == len(started)
    assert len(handler._registry) == 0


def test_handler_never_raises_into_user_code(tracing: Tracing, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    handler = tracing.handler()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("tracer exploded")

    monkeypatch.setattr(handler._tracer, "start_span", broken)
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        handler.on_chain_start({}, {}, run_id=uuid.uuid4())
        handler.on_chain_start({}, {}, run_id=uuid.uuid4())
    warnings = [r for r in caplog.records if "on_chain_start" in r.getMessage()]
    assert len(warnings) <= 1  # logged once per (event, error type), not per call

    handler.raise_error = True
    with pytest.raises(ValueError):
        handler.on_chain_start({}, {}, run_id=uuid.uuid4())


def test_unknown_run_ids_and_duplicates_are_ignored(tracing: Tracing) -> None:
    handler = tracing.handler()
    run_id = uuid.uuid4()
    handler.on_chain_end({}, run_id=run_id)
    handler.on_llm_new_token("x", run_id=run_id)
    handler.on_chain_start(None, {}, run_id=run_id)
    handler.on_chain_start(None, {}, run_id=run_id)  # duplicate start
    handler.on_chain_end({}, run_id=run_id)
    handler.on_chain_end({}, run_id=run_id)  # duplicate end
    assert len(tracing.spans()) == 1


def test_open_children_are_ended_with_their_root(tracing: Tracing) -> None:
    handler = tracing.handler()
    root, child, grandchild = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start({}, {}, run_id=root)
    handler.on_chain_start({}, {}, run_id=child, parent_run_id=root, name="child")
    handler.on_tool_start({"name": "t"}, "in", run_id=grandchild, parent_run_id=child)
    handler.on_chain_end({}, run_id=root)
    spans = {s.name: s for s in tracing.spans()}
    assert set(spans) == {"chain", "child", "execute_tool t"}
    assert spans["child"].attributes["langchain.run.orphaned"] is True
    assert spans["execute_tool t"].attributes["langchain.run.orphaned"] is True
    assert "langchain.run.orphaned" not in spans["chain"].attributes
    assert spans["child"].end_time <= spans["chain"].end_time
    assert len(handler._registry) == 0


def test_memory_is_bounded_when_runs_never_end(tracing: Tracing) -> None:
    handler = tracing.handler(max_open_runs=1000)
    for _ in range(100_000):
        handler.on_chain_start(None, {}, run_id=uuid.uuid4())
    assert len(handler._registry) == 1000
    from otel_callbacks import registry
    assert len(registry._ACTIVE_CONTEXTS) <= 1000 + 50  # other tests' open runs at most
    evicted = tracing.spans()
    assert len(evicted) == 99_000
    assert all(s.attributes["langchain.run.evicted"] is True for s in evicted[:10])
    handler.close()
    assert len(tracing.spans()) == 100_000


def test_odd_inputs_give_capped_safe_attributes(tracing: Tracing) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    huge = "x" * 5_000_000
    handler = tracing.handler(capture_content=True, max_content_length=1000)
    run_id = uuid.uuid4()
    handler.on_chain_start(None, {"cyclic": cyclic, "odd": Unprintable(), "huge": huge},
                           run_id=run_id, metadata={"huge": huge, "odd": Unprintable(),
                                                    "cyclic": cyclic, "none": None},
                           tags=[huge])
    handler.on_chain_end(Unprintable(), run_id=run_id)
    span = tracing.spans()[0]
    for key, value in span.attributes.items():
        assert len(str(value)) < 3000, key
    assert "[cycle]" in span.attributes["langchain.run.inputs"]
    assert "truncated" in span.attributes["langchain.metadata.huge"]


def test_secrets_never_exported(tracing: Tracing) -> None:
    from pydantic import SecretStr

    secret = "sk-live-1234567890abcdefghijkl"
    for capture in (False, True):
        handler = tracing.handler(capture_content=capture)
        run_id = uuid.uuid4()
        handler.on_chain_start(None, {"api_key": secret, "question": "hi", "token": SecretStr("p4ss")},
                               run_id=run_id,
                               metadata={"api_key": secret, "openai_api_key": "abc123xyz",
                                         "password": "hunter2", "access_token": "tok-123",
                                         "max_tokens": 5, "note": f"key is {secret}"})
        handler.on_chain_end({"echo": secret}, run_id=run_id)
    exported = repr([(dict(s.attributes), [dict(e.attributes) for e in s.events])
                     for s in tracing.spans()])
    for value in (secret, "abc123xyz", "hunter2", "tok-123", "p4ss"):
        assert value not in exported
    last = tracing.spans()[-1]
    assert last.attributes["langchain.metadata.max_tokens"] == 5  # a count, not a secret
    assert "hi" in last.attributes["langchain.run.inputs"]


def test_error_status_and_generator_exit(tracing: Tracing) -> None:
    handler = tracing.handler()
    failed, abandoned = uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start(None, {}, run_id=failed, name="failing")
    handler.on_chain_error(KeyError("missing"), run_id=failed)
    handler.on_llm_start({"name": "m"}, ["p"], run_id=abandoned)
    handler.on_llm_error(GeneratorExit(), run_id=abandoned)
    spans = {s.attributes["langchain.run.id"]: s for s in tracing.spans()}
    assert spans[str(failed)].status.status_code is StatusCode.ERROR
    assert spans[str(failed)].attributes["error.type"] == "KeyError"
    assert spans[str(abandoned)].status.status_code is StatusCode.UNSET
    assert spans[str(abandoned)].attributes["langchain.run.abandoned"] is True


def test_open_runs_of_a_dropped_handler_are_ended(tracing: Tracing) -> None:
    import gc

    handler = tracing.handler()
    for _ in range(3):
        handler.on_chain_start(None, {}, run_id=uuid.uuid4())
    del handler
    gc.collect()
    spans = tracing.spans()
    assert len(spans) == 3
    assert all(s.attributes["langchain.run.evicted"] is True for s in spans)


def test_open_runs_are_exported_at_interpreter_exit(tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "spans.txt"
    script = textwrap.dedent(f"""
        import uuid
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from otel_callbacks import OTelHandler

        class FileExporter(SpanExporter):
            def export(self, spans):
                with open({str(out)!r}, "a") as f:
                    for s in spans:
                        f.write(s.name + "\\n")
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(FileExporter()))
        kept = OTelHandler(tracer_provider=provider)
        dropped = OTelHandler(tracer_provider=provider)
        for handler, name in ((kept, "kept"), (dropped, "dropped")):
            root = uuid.uuid4()
            handler.on_chain_start(None, {{}}, run_id=root, name=name + "-open")
            done = uuid.uuid4()
            handler.on_chain_start(None, {{}}, run_id=done, parent_run_id=root, name=name + "-done")
            handler.on_chain_end({{}}, run_id=done)
        del dropped
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().split()) == ["dropped-done", "dropped-open", "kept-done", "kept-open"]
