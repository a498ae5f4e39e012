"""Issue 12 item 2: memory after N finished runs does not depend on the size of their data.

The process-wide conversion caches (metadata, tags, agent names, secret keys) used to hold
every value they had seen, up to 8,192 entries: 4,000 runs with a unique 100 KB metadata value
kept ~380 MB alive after every run had ended.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from langchain_core.runnables import RunnableLambda
from test_genai_conventions import FakeChat, cfg

RUNS = 60


def retained_after_runs(tracing: Any, size: int) -> int:
    """Bytes still allocated after RUNS finished runs whose metadata, tags, name and metadata
    keys are unique strings of ``size`` characters (spans cleared, garbage collected)."""
    handler = tracing.handler()
    chain = RunnableLambda(lambda x: x)
    model = FakeChat()

    def one(i: int) -> None:
        big = f"{i:08d}" + "x" * size
        config = cfg(handler, run_name=f"step-{big}", tags=[f"tag-{big}"],
                     metadata={"document": big, f"key-{big}": i, "pair": (big, "b")})
        chain.invoke("hi", config=config)
        model.invoke("hi", config=config)

    one(-1)  # warm up imports and first-use allocations
    tracing.exporter.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(RUNS):
            one(i)
        tracing.exporter.clear()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_finished_runs_do_not_keep_their_metadata_alive(tracing: Any) -> None:
    small = retained_after_runs(tracing, 10)
    large = retained_after_runs(tracing, 100_000)
    # Before: every unique 100 KB value stayed cached (several times over): ~30 MB here.
    assert large - small < 2_000_000, f"{(large - small) / RUNS:,.0f} bytes kept per run"


def test_repeated_small_metadata_is_still_converted_once(tracing: Any) -> None:
    """The caches still do their job for what repeats (LangGraph's per-node keys)."""
    from otel_callbacks import mapping

    handler = tracing.handler()
    config = cfg(handler, tags=["team-a"], metadata={"langgraph_node": "agent", "step": 3})
    RunnableLambda(lambda x: x).invoke("hi", config=config)
    assert ("langgraph_node", str, "agent") in mapping._metadata_cache
    assert ("team-a",) in mapping._tags_cache
