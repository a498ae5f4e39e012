"""OTelHandler's cost per span next to the raw SDK cost of the *same* spans, in one process.

The handler is driven through its callbacks exactly as LangChain calls them (a chain with a
chat model, a tool and a retriever under it, the model streaming tokens). The raw side replays
the spans the handler exported: same names, kinds, parents, attributes and events, made with
``start_span`` / ``add_event`` / ``end`` on the same kind of provider. The ratio is what the
handler adds on top of the SDK for the same telemetry (goal: <= 1.5).

    python -m benchmarks.handler_vs_sdk [--rounds 15] [--trees 200]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from benchmarks.common import make_provider
from otel_callbacks import OTelHandler

TOKENS = 20


def drive_handler(handler: OTelHandler) -> None:
    """One run tree: chain -> (chat model streaming TOKENS tokens, tool, retriever)."""
    root = uuid.uuid4()
    handler.on_chain_start({"id": ["RunnableSequence"]}, {"q": "x"}, run_id=root,
                           tags=["user-tag"], metadata={"thread_id": "t1"}, name="answer")
    model = uuid.uuid4()
    handler.on_chat_model_start({"id": ["langchain", "chat_models", "openai", "ChatOpenAI"]},
                                [["hello"]], run_id=model, parent_run_id=root,
                                tags=["seq:step:1"], metadata={"ls_provider": "openai",
                                                               "ls_model_name": "gpt-4o-mini",
                                                               "ls_temperature": 0.2},
                                invocation_params={"model": "gpt-4o-mini"})
    for _ in range(TOKENS):
        handler.on_llm_new_token("tok", run_id=model, parent_run_id=root)
    handler.on_llm_end({"generations": [], "llm_output": {"token_usage": {"prompt_tokens": 5,
                                                                         "completion_tokens": 20}}},
                       run_id=model, parent_run_id=root)
    tool = uuid.uuid4()
    handler.on_tool_start({"name": "search", "description": "Search the web."}, "query",
                          run_id=tool, parent_run_id=root, inputs={"q": "x"}, name="search")
    handler.on_tool_end("result", run_id=tool, parent_run_id=root)
    retriever = uuid.uuid4()
    handler.on_retriever_start({"id": ["KnowledgeBase"]}, "query", run_id=retriever,
                               parent_run_id=root, name="KnowledgeBase")
    handler.on_retriever_end([], run_id=retriever, parent_run_id=root)
    handler.on_chain_end({"a": "y"}, run_id=root)


def replay(tracer: trace.Tracer, template: list[ReadableSpan]) -> None:
    """The same spans as ``template`` (parents first), straight through the SDK API."""
    contexts: dict[int, Any] = {}
    spans = []
    for original in template:
        parent = contexts.get(original.parent.span_id) if original.parent else None
        span = tracer.start_span(original.name, context=parent, kind=original.kind,
                                 attributes=dict(original.attributes or {}))
        contexts[original.context.span_id] = trace.set_span_in_context(span)
        for event in original.events:
            span.add_event(event.name, dict(event.attributes or {}))
        spans.append(span)
    for span in reversed(spans):
        span.end()


def measure(rounds: int, trees: int) -> tuple[float, float, int]:
    provider, exporter = make_provider()
    handler = OTelHandler(tracer_provider=provider)
    drive_handler(handler)
    template = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    spans_per_tree = len(template)
    exporter.clear()
    tracer = provider.get_tracer("raw")
    handler_times, raw_times = [], []
    for _ in range(rounds):  # interleaved, so noise hits both sides alike
        for fn, out in ((lambda: drive_handler(handler), handler_times),
                        (lambda: replay(tracer, template), raw_times)):
            gc.collect()
            start = time.process_time_ns()
            for _ in range(trees):
                fn()
            out.append((time.process_time_ns() - start) / trees / spans_per_tree / 1000)
            exporter.clear()
    return statistics.median(handler_times), statistics.median(raw_times), spans_per_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--trees", type=int, default=200)
    args = parser.parse_args()
    handler_us, raw_us, spans = measure(args.rounds, args.trees)
    print(f"run tree: {spans} spans ({TOKENS} streamed tokens on the model span); "
          f"{args.rounds} interleaved rounds x {args.trees} trees, process CPU time")
    print(f"OTelHandler (callbacks -> spans): {handler_us:6.2f} us per span")
    print(f"raw OTel SDK, same spans:         {raw_us:6.2f} us per span")
    print(f"ratio:                            {handler_us / raw_us:6.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
