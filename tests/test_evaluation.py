"""Issue 13: feedback on a finished run is a span in that run's trace, linked to its span."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from conftest import Tracing
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from otel_callbacks import attributes as attr
from otel_callbacks import evaluation, record_evaluation, use_conversation


def finished_run(tracing: Tracing, **config: Any) -> tuple[uuid.UUID, ReadableSpan]:
    run_id = uuid.uuid4()
    (FakeListChatModel(responses=["42"]) | StrOutputParser()).invoke(
        "question", {"callbacks": [tracing.handler()], "run_id": run_id, **config})
    root = next(s for s in tracing.spans() if s.attributes.get(attr.RUN_ID) == str(run_id))
    return run_id, root


def only_evaluation(tracing: Tracing) -> ReadableSpan:
    found = [s for s in tracing.spans() if attr.GEN_AI_EVALUATION_NAME in s.attributes]
    assert len(found) == 1, [s.name for s in tracing.spans()]
    return found[0]


def assert_in_trace_of(span: ReadableSpan, evaluated: ReadableSpan) -> None:
    assert span.context.trace_id == evaluated.context.trace_id
    assert span.parent is not None and span.parent.span_id == evaluated.context.span_id
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (evaluated.context.trace_id,
                                                             evaluated.context.span_id)
    assert link.attributes[attr.LINK_REASON] == "evaluation"
    assert span.end_time is not None and span.start_time >= evaluated.end_time


@pytest.mark.parametrize("as_text", [False, True])
def test_feedback_by_run_id(tracing: Tracing, as_text: bool) -> None:
    with use_conversation("c-feedback", user_id="u-9"):
        run_id, root = finished_run(tracing)
    result = record_evaluation(str(run_id) if as_text else run_id, "user_feedback", score=1,
                               label="thumbs_up", explanation="Exactly what I needed")
    span = only_evaluation(tracing)
    assert result == span.context
    assert span.name == "evaluation user_feedback"
    assert_in_trace_of(span, root)
    assert span.attributes[attr.GEN_AI_EVALUATION_NAME] == "user_feedback"
    assert span.attributes[attr.GEN_AI_EVALUATION_SCORE_VALUE] == 1.0
    assert span.attributes[attr.GEN_AI_EVALUATION_SCORE_LABEL] == "thumbs_up"
    assert span.attributes[attr.GEN_AI_EVALUATION_EXPLANATION] == "Exactly what I needed"
    # The evaluated run's conversation and user: a query for low scores finds the conversation.
    assert span.attributes[attr.GEN_AI_CONVERSATION_ID] == "c-feedback"
    assert span.attributes[attr.USER_ID] == "u-9"


def test_feedback_by_span_context(tracing: Tracing) -> None:
    _, root = finished_run(tracing)
    chat = next(s for s in tracing.spans() if s.name.startswith("chat "))
    result = record_evaluation(chat.context, "llm_judge.relevance", score=0.25,
                               tracer_provider=tracing.provider)
    span = only_evaluation(tracing)
    assert result == span.context
    assert_in_trace_of(span, chat)
    assert span.attributes[attr.GEN_AI_EVALUATION_SCORE_VALUE] == 0.25
    assert attr.GEN_AI_EVALUATION_SCORE_LABEL not in span.attributes


def test_feedback_on_a_run_still_open(tracing: Tracing) -> None:
    results: list[Any] = []
    own_id = uuid.uuid4()

    def outer(x: str, config: Any) -> str:
        results.append(record_evaluation(own_id, "in_flight", score=0.5,
                                         tracer_provider=tracing.provider))
        return x

    RunnableLambda(outer).invoke("hi", {"callbacks": [tracing.handler()], "run_id": own_id})
    root = next(s for s in tracing.spans() if s.attributes.get(attr.RUN_ID) == str(own_id))
    span = only_evaluation(tracing)
    assert results == [span.context]
    assert span.context.trace_id == root.context.trace_id
    assert span.parent.span_id == root.context.span_id


def test_unknown_run_records_nothing_and_says_so(tracing: Tracing,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    finished_run(tracing)
    before = len(tracing.spans())
    monkey_warned = evaluation._warned
    evaluation._warned = False
    try:
        with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
            assert record_evaluation(uuid.uuid4(), "user_feedback", score=0) is None
        assert "is not known here" in caplog.text
        for bad in ("not-a-uuid", None, 42, object(), SpanContext(0, 0, False),
                    SpanContext(5, 6, False, TraceFlags(1))):
            result = record_evaluation(bad, "user_feedback", score=0,  # type: ignore[arg-type]
                                       tracer_provider=tracing.provider)
            if isinstance(bad, SpanContext) and bad.is_valid:
                assert result is not None  # any valid span context is a target, known or not
            else:
                assert result is None, bad
        assert record_evaluation(uuid.uuid4(), "", score=1) is None
        run_id, _ = finished_run(tracing)
        assert record_evaluation(run_id, None, score=1) is None  # type: ignore[arg-type]
    finally:
        evaluation._warned = monkey_warned or evaluation._warned
    assert len([s for s in tracing.spans() if attr.GEN_AI_EVALUATION_NAME in s.attributes]) == 1


def test_window_of_remembered_runs_is_bounded(tracing: Tracing,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "MAX_REMEMBERED_RUNS", 5)
    handler = tracing.handler()
    ids = [uuid.uuid4() for _ in range(8)]
    for run_id in ids:
        RunnableLambda(lambda x: x).invoke(1, {"callbacks": [handler], "run_id": run_id})
    assert len(evaluation._runs) == 5
    assert record_evaluation(ids[0], "late") is None  # fell out of the window
    assert record_evaluation(ids[-1], "recent") is not None


def test_secret_in_an_explanation_is_masked(tracing: Tracing) -> None:
    run_id, _ = finished_run(tracing)
    secret = "sk-" + "Q1w2E3r4T5y6U7i8O9p0" * 2
    record_evaluation(run_id, "judge", label="bad", explanation=f"the answer leaked {secret}")
    span = only_evaluation(tracing)
    assert secret not in span.attributes[attr.GEN_AI_EVALUATION_EXPLANATION]
    assert "[REDACTED]" in span.attributes[attr.GEN_AI_EVALUATION_EXPLANATION]


def test_undecodable_feedback_text_is_repaired(tracing: Tracing) -> None:
    """A name, label or explanation from a file name (a lone surrogate) must not cost the
    export batch: the evaluation span's text is made UTF-8-safe like every run's."""
    import os

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    bad = os.fsdecode(b"caf\xe9")
    run_id, _ = finished_run(tracing)
    assert record_evaluation(run_id, f"judge-{bad}", label=f"bad-{bad}",
                             explanation=f"read {bad}") is not None
    span = only_evaluation(tracing)
    assert span.name == "evaluation judge-caf\ufffd"
    assert span.attributes[attr.GEN_AI_EVALUATION_SCORE_LABEL] == "bad-caf\ufffd"
    encode_spans(tracing.spans()).SerializeToString()  # raised UnicodeEncodeError before
