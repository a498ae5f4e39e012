"""Our own callback manager: LangChain's API and inheritance semantics, sync and async."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from opentelemetry import trace

from otel_callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
    CallbackManager,
    run_context,
)
from tests.conftest import Tracing


class Recorder(BaseCallbackHandler):
    def __init__(self, name: str = "rec", **flags: Any) -> None:
        super().__init__()
        self.name = name
        self.events: list[tuple[str, Any]] = []
        for key, value in flags.items():
            setattr(self, key, value)

    def _rec(self, event: str, run_id: Any) -> None:
        self.events.append((event, run_id))

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kw: Any) -> None:
        self._rec("chain_start", run_id)

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kw: Any) -> None:
        self._rec("chain_end", run_id)

    def on_tool_start(self, serialized: Any, input_str: Any, *, run_id: Any, **kw: Any) -> None:
        self._rec("tool_start", run_id)

    def on_text(self, text: str, *, run_id: Any, **kw: Any) -> None:
        self._rec("text", run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, **kw: Any) -> None:
        self._rec("llm_start", run_id)


class IgnoresChains(Recorder):
    @property
    def ignore_chain(self) -> bool:
        return True


def test_inheritable_reach_descendants_local_only_own_run() -> None:
    request, constructor = Recorder("request"), Recorder("constructor")
    manager = CallbackManager.configure([request], [constructor])
    run = manager.on_chain_start({"name": "outer"}, {"x": 1})
    child_manager = run.get_child()
    child = child_manager.on_tool_start({"name": "t"}, "in")
    child.on_tool_end("out")
    run.on_chain_end({})
    assert [e for e, _ in request.events] == ["chain_start", "tool_start", "chain_end"]
    assert [e for e, _ in constructor.events] == ["chain_start", "chain_end"]
    assert child.parent_run_id == run.run_id
    assert child_manager.handlers == [request]


def test_tags_and_metadata_inheritance() -> None:
    manager = CallbackManager.configure([], None, inheritable_tags=["a"], local_tags=["b"],
                                        inheritable_metadata={"k": 1}, local_metadata={"l": 2})
    run = manager.on_chain_start(None, {})
    child = run.get_child("seq:step:1")
    assert manager.tags == ["a", "b"] and child.tags == ["a", "seq:step:1"]
    assert child.inheritable_tags == ["a"]
    assert child.metadata == {"k": 1}


def test_ignore_flags_and_error_policy(caplog: pytest.LogCaptureFixture) -> None:
    ignoring = IgnoresChains()

    class Exploding(BaseCallbackHandler):
        def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("handler bug")

    manager = CallbackManager.configure([ignoring, Exploding()])
    with caplog.at_level(logging.WARNING):
        run = manager.on_chain_start(None, {})
    run.on_text("hello")
    assert [e for e, _ in ignoring.events] == ["text"]
    assert any("handler bug" in r.getMessage() for r in caplog.records)

    strict = Exploding()
    strict.raise_error = True
    with pytest.raises(ValueError):
        CallbackManager.configure([strict]).on_chain_start(None, {})


def test_chat_model_start_falls_back_to_llm_start() -> None:
    recorder = Recorder()
    managers = CallbackManager.configure([recorder]).on_chat_model_start(
        {"name": "m"}, [["hello"], ["again"]])
    assert len(managers) == 2 and managers[0].run_id != managers[1].run_id
    assert [e for e, _ in recorder.events] == ["llm_start", "llm_start"]


def test_async_manager_awaits_async_handlers_and_runs_sync_ones() -> None:
    seen: list[str] = []

    class AsyncRec(AsyncCallbackHandler):
        async def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
            await asyncio.sleep(0)
            seen.append("async start")

        async def on_chain_end(self, outputs: Any, **kw: Any) -> None:
            seen.append("async end")

    sync_rec = Recorder()

    async def main() -> None:
        manager = AsyncCallbackManager.configure([AsyncRec(), sync_rec])
        run = await manager.on_chain_start(None, {})
        child = run.get_child()
        assert isinstance(child, AsyncCallbackManager)
        tool_run = await child.on_tool_start({"name": "t"}, "x")
        await tool_run.on_tool_end("y")
        await run.on_chain_end({})

    asyncio.run(main())
    assert seen == ["async start", "async end"]
    assert [e for e, _ in sync_rec.events] == ["chain_start", "tool_start", "chain_end"]


def test_otel_handler_with_own_manager_builds_tree(tracing: Tracing) -> None:
    manager = CallbackManager.configure([tracing.handler()])
    run = manager.on_chain_start({"name": "pipeline"}, {"q": "x"})
    with run_context(run):
        with tracing.tracer.start_as_current_span("user step"):
            pass
    child = run.get_child()
    (llm,) = child.on_llm_start({"name": "model"}, ["prompt"])
    llm.on_llm_new_token("a")
    llm.on_llm_end({"generations": []})
    tool_run = child.on_tool_start({"name": "search"}, "query")
    tool_run.on_tool_error(RuntimeError("down"))
    run.on_chain_end({})
    assert trace.get_current_span() is trace.INVALID_SPAN
    spans = {s.name: s for s in tracing.spans()}
    root = spans["pipeline"]
    assert spans["user step"].parent.span_id == root.context.span_id
    assert spans["text_completion model"].parent.span_id == root.context.span_id
    assert spans["execute_tool search"].parent.span_id == root.context.span_id
    assert spans["execute_tool search"].status.is_ok is False


def test_otel_handler_with_own_async_manager(tracing: Tracing) -> None:
    async def main() -> None:
        manager = AsyncCallbackManager.configure([tracing.handler()])
        run = await manager.on_chain_start({"name": "pipeline"}, {})
        with run_context(run):
            await asyncio.sleep(0)
            with tracing.tracer.start_as_current_span("user step"):
                pass
        (chat,) = await run.get_child().on_chat_model_start({"name": "m"}, [["hi"]])
        await chat.on_llm_end({"generations": []})
        await run.on_chain_end({})

    asyncio.run(main())
    spans = {s.name: s for s in tracing.spans()}
    assert spans["user step"].parent.span_id == spans["pipeline"].context.span_id
    assert spans["chat m"].parent.span_id == spans["pipeline"].context.span_id
