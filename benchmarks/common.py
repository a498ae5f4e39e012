"""Shared pieces: tracer-provider setup, the variants, the raw-SDK-span yardstick."""

from __future__ import annotations

import gc
import importlib
import os
import statistics
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ALL_VARIANTS = ("none", "noop", "sdk_floor", "sdk_floor_attrs", "otel_callbacks", "openllmetry",
                "openinference")
# Not in the default set: our handler with content capture on, which is what the
# two peers do by default (they serialise inputs/outputs onto every span).
# sdk_floor_nested: the floor whose spans are also made current where their runs execute (our
# context bridge), to show what nesting costs apart from the rest of a tracer's work.
EXTRA_VARIANTS = ("otel_callbacks_content", "sdk_floor_nested")

VERSIONED_PACKAGES = (
    "langchain-core",
    "langgraph",
    "opentelemetry-sdk",
    "otel-callbacks",
    "opentelemetry-instrumentation-langchain",
    "openinference-instrumentation-langchain",
)


class VariantUnavailable(Exception):
    """The variant cannot run in this interpreter (e.g. package not installed)."""


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


# "ratio10": parent-based 10% sampling (what OTEL_TRACES_SAMPLER=parentbased_traceidratio with
# _ARG=0.1 builds), over trace ids of which exactly every tenth is kept, so every variant and
# every run sees the same traces sampled (benchmarks.sampling sets it for its subprocesses).
SAMPLER_ENV = "BENCH_SAMPLER"


class EveryTenthKept:
    """Trace ids for TraceIdRatioBased(0.1): the 1st, 11th, 21st... are below its bound."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._ids = RandomIdGenerator()
        self._n = 0

    def generate_span_id(self) -> int:
        return self._ids.generate_span_id()

    def generate_trace_id(self) -> int:
        self._n += 1
        low = 1 if self._n % 10 == 1 else (1 << 64) - 1  # the ratio sampler reads the low 64 bits
        return (self._n << 64) | low

    def is_trace_id_random(self) -> bool:
        # Asked by the SDK (1.39+) for every new trace: without it every root span failed to
        # start, and the sampled figures measured that failure instead of sampling.
        return False


def _sampling_options() -> dict[str, Any]:
    if os.environ.get(SAMPLER_ENV) != "ratio10":
        return {}
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return {"sampler": ParentBased(TraceIdRatioBased(0.1)), "id_generator": EveryTenthKept()}


def make_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The one provider setup every variant uses: Simple processor -> in-memory."""
    exporter = InMemorySpanExporter()
    # shutdown_on_exit=False: the benchmark processes exit with spans already exported.
    tp = TracerProvider(shutdown_on_exit=False, **_sampling_options())
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def _noop_handler_class():
    from langchain_core.callbacks import BaseCallbackHandler

    class NoopHandler(BaseCallbackHandler):
        """Overrides nothing: measures LangChain's own callback dispatch.

        run_inline like the tracing handlers (ours, OpenLLMetry's): without it,
        async code hands every sync callback to a thread pool, and the floor
        would measure those hops instead of the dispatch itself.
        """

        run_inline = True

    return NoopHandler


def _sdk_floor_handler_class():
    from langchain_core.callbacks import BaseCallbackHandler

    class SdkFloorHandler(BaseCallbackHandler):
        """One yardstick span per run (``raw_span_once``'s shape) and nothing else.

        Parent from a dict, no names, no attributes from the run, no context bridge, no
        bounds, not thread-safe beyond the GIL: the least any tracer that emits one SDK span
        per run pays inside the workload. The gap between it and a real tracer is the
        tracer's own work; the gap between it and the raw span in a tight loop is what the
        SDK itself costs once LangChain's code runs between spans.
        """

        run_inline = True

        def __init__(self, tracer: trace.Tracer) -> None:
            self._tracer = tracer
            self._runs: dict[Any, tuple[Any, Any]] = {}
            # sdk_floor_attrs: per span in start order, (attributes, events) as our spans carry
            # them on this workload; None: the yardstick's 5 attributes and 1 event.
            self.shapes: list[tuple[dict[str, Any], int]] | None = None
            self._next = 0

        def _start(self, run_id: Any, parent_run_id: Any) -> None:
            parent = self._runs.get(parent_run_id)
            parent_ctx = parent[1] if parent is not None else None
            shapes = self.shapes
            if shapes is None:
                span = raw_span_start(self._tracer, parent_ctx)
            else:  # the SDK's cheapest way to carry n attributes: one dict at start
                attributes, events = shapes[self._next % len(shapes)]
                self._next += 1
                span = self._tracer.start_span("raw", context=parent_ctx, attributes=attributes)
                for _ in range(events):
                    span.add_event("evt")
            self._runs[run_id] = (span, trace.set_span_in_context(span, parent_ctx))

        def _end(self, run_id: Any) -> None:
            run = self._runs.pop(run_id, None)
            if run is not None:
                run[0].end()

        def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs):
            self._start(run_id, parent_run_id)

        def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs):
            self._start(run_id, parent_run_id)

        def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kwargs):
            self._start(run_id, parent_run_id)

        def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kwargs):
            self._start(run_id, parent_run_id)

        def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs):
            self._start(run_id, parent_run_id)

        def _ended(self, _result, *, run_id, **kwargs):
            self._end(run_id)

        on_chain_end = on_chain_error = on_llm_end = on_llm_error = _ended
        on_tool_end = on_tool_error = on_retriever_end = on_retriever_error = _ended

    return SdkFloorHandler


def _sdk_floor_nested_handler_class():
    """The floor plus nesting: each run's span is registered where otel_callbacks' context
    bridge looks for it, so user and HTTP spans inside the run nest under it, as under ours."""
    from otel_callbacks.registry import _ACTIVE_CONTEXTS, run_key

    floor = _sdk_floor_handler_class()

    class SdkFloorNestedHandler(floor):
        def _start(self, run_id: Any, parent_run_id: Any) -> None:
            floor._start(self, run_id, parent_run_id)
            _ACTIVE_CONTEXTS[run_key(run_id)] = self._runs[run_id][1]

        def _end(self, run_id: Any) -> None:
            _ACTIVE_CONTEXTS.pop(run_key(run_id), None)
            floor._end(self, run_id)

    return SdkFloorNestedHandler


@dataclass
class Variant:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    handler: Any = None  # the callback handler doing the work, when there is one
    note: str = ""


def setup_variant(name: str, tp: TracerProvider, **handler_options: Any) -> Variant:
    """Install variant ``name`` against ``tp``; return the per-call config to use.

    ``handler_options`` go to our OTelHandler (e.g. ``max_open_runs`` for the memory modes).
    Raises VariantUnavailable if its package cannot be imported / instrumented.
    """
    if name == "none":
        return Variant(name)
    if name == "noop":
        h = _noop_handler_class()()
        return Variant(name, {"callbacks": [h]}, h)
    if name in ("sdk_floor", "sdk_floor_attrs"):
        h = _sdk_floor_handler_class()(tp.get_tracer("benchmarks.floor"))
        if name == "sdk_floor":
            return Variant(name, {"callbacks": [h]}, h, "one raw-span-shaped SDK span per run, nothing else")
        return Variant(name, {"callbacks": [h]}, h, "the floor, each span with as many attributes "
                       "and events as otel_callbacks' span in the same place")
    if name == "sdk_floor_nested":
        from otel_callbacks import context_bridge

        h = _sdk_floor_nested_handler_class()(tp.get_tracer("benchmarks.floor"))
        context_bridge.install()
        return Variant(name, {"callbacks": [h]}, h, "the floor, each run's span made current where "
                       "the run executes (otel_callbacks' context bridge)")
    if name in ("otel_callbacks", "otel_callbacks_content"):
        try:
            from otel_callbacks import OTelHandler
        except Exception as exc:  # package not written / not installed yet
            raise VariantUnavailable(f"import otel_callbacks failed: {type(exc).__name__}: {exc}") from exc
        kwargs: dict[str, Any] = {"tracer_provider": tp, **handler_options}
        if name == "otel_callbacks_content":
            kwargs["capture_content"] = True
        h = OTelHandler(**kwargs)
        return Variant(name, {"callbacks": [h]}, h)
    if name in _PEERS:
        module, instrumentor, package, note = _PEERS[name]
        try:
            cls = getattr(importlib.import_module(module), instrumentor)
        except Exception as exc:
            raise VariantUnavailable(f"{package}: {exc}") from exc
        cls().instrument(tracer_provider=tp)
        return Variant(name, {}, _injected_handler(name), note)
    raise ValueError(f"unknown variant {name!r}")


def prepare_workload(variant: Variant, workload: str) -> None:
    """sdk_floor_attrs: learn, outside any measurement, how many attributes and events our
    handler's spans carry on ``workload`` (in start order), and give the floor the same."""
    if variant.name != "sdk_floor_attrs":
        return
    from benchmarks.workloads import WORKLOADS
    from otel_callbacks import OTelHandler, context_bridge

    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    run = WORKLOADS[workload]({"callbacks": [OTelHandler(tracer_provider=tp)]})
    run()
    exporter.clear()
    run()
    context_bridge.uninstall()  # the floor has no bridge: its patches must not stay
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    variant.handler.shapes = [({f"attr.{i}": "value" for i in range(len(s.attributes or {}))},
                               len(s.events)) for s in spans]
    variant.handler._next = 0


# Peer variant -> (module, instrumentor class, PyPI package, note for the table).
_PEERS = {
    "openllmetry": ("opentelemetry.instrumentation.langchain", "LangchainInstrumentor",
                    "opentelemetry-instrumentation-langchain",
                    "content capture on (TRACELOOP_TRACE_CONTENT default)"),
    "openinference": ("openinference.instrumentation.langchain", "LangChainInstrumentor",
                      "openinference-instrumentation-langchain", "content capture on (default)"),
}


def _injected_handler(name: str):
    """The handler a peer instrumentor adds to every CallbackManager it sees."""
    from langchain_core.callbacks import CallbackManager

    m = CallbackManager(handlers=[])
    handlers = list(dict.fromkeys([*m.handlers, *m.inheritable_handlers]))
    if not handlers:
        raise VariantUnavailable(f"{name}: instrument() added no callback handler (version check refused?)")
    return handlers[0]


# ---------------------------------------------------------------------------
# The yardstick: one plain SDK span with a parent, 5 attributes and 1 event.


def raw_span_start(tracer: trace.Tracer, parent_ctx) -> Any:
    """The yardstick span up to its end: start with a parent, 5 attributes, 1 event."""
    span = tracer.start_span("raw", context=parent_ctx)
    span.set_attribute("a.str", "value")
    span.set_attribute("a.int", 42)
    span.set_attribute("a.float", 1.5)
    span.set_attribute("a.bool", True)
    span.set_attribute("a.other", "x")
    span.add_event("evt")
    return span


def raw_span_once(tracer: trace.Tracer, parent_ctx) -> None:
    raw_span_start(tracer, parent_ctx).end()


def measure_raw_span(
    tp: TracerProvider, exporter: InMemorySpanExporter, batches: int = 30, per_batch: int = 500
) -> tuple[float, float]:
    """Median seconds per raw span, (wall, process CPU); batched above timer resolution."""
    tracer = tp.get_tracer("benchmarks.raw")
    parent = tracer.start_span("raw-parent")
    parent_ctx = trace.set_span_in_context(parent)
    for _ in range(per_batch):  # warm-up
        raw_span_once(tracer, parent_ctx)
    exporter.clear()
    gc.collect()
    wall, cpu = [], []
    for _ in range(batches):
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(per_batch):
            raw_span_once(tracer, parent_ctx)
        c1, t1 = time.process_time_ns(), time.perf_counter_ns()
        wall.append((t1 - t0) / per_batch / 1e9)
        cpu.append((c1 - c0) / per_batch / 1e9)
        exporter.clear()
    parent.end()
    exporter.clear()
    return statistics.median(wall), statistics.median(cpu)


def time_iterations(
    fn: Callable[[], Any],
    exporter: InMemorySpanExporter,
    *,
    min_time: float,
    warmup_time: float,
    min_iters: int = 5,
    max_iters: int = 100_000,
) -> tuple[list[float], list[float], list[int]]:
    """Run ``fn`` repeatedly; return per-iteration wall seconds, process-CPU seconds, spans.

    The exporter is cleared between iterations (outside the timed region) so
    memory stays bounded and the span count is per iteration.
    """
    deadline = time.perf_counter() + warmup_time
    n = 0
    while n < 2 or time.perf_counter() < deadline:
        fn()
        exporter.clear()
        n += 1
    gc.collect()
    times: list[float] = []
    cpu: list[float] = []
    spans: list[int] = []
    t_end = time.perf_counter() + min_time
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() < t_end):
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        fn()
        c1, t1 = time.process_time_ns(), time.perf_counter_ns()
        times.append((t1 - t0) / 1e9)
        cpu.append((c1 - c0) / 1e9)
        spans.append(len(exporter.get_finished_spans()))
        exporter.clear()
    return times, cpu, spans
