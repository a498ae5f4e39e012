"""A LangGraph tool-calling agent: model -> tool -> model, with user spans inside the tool."""

from __future__ import annotations

import asyncio
import warnings
from importlib.metadata import version
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from opentelemetry.trace import SpanKind

from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


class ToolCallingModel(BaseChatModel):
    """Asks for the weather tool once, then answers with what the tool returned."""

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        tool_results = [m for m in messages if isinstance(m, ToolMessage)]
        if tool_results:
            message = AIMessage(content=f"The weather: {tool_results[-1].content}")
        else:
            message = AIMessage(content="", tool_calls=[
                {"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}])
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        return self._generate(*args, **kwargs)


def build_agent(tracing: Tracing) -> Any:
    from langgraph.prebuilt import create_react_agent

    @tool
    def weather(city: str) -> str:
        """Current weather for a city."""
        with tracing.tracer.start_as_current_span("HTTP GET weather-api"):
            return f"sunny in {city}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(ToolCallingModel(), [weather])


def check(tracing: Tracing, recorder: RunRecorder) -> None:
    assert_span_tree_matches(tracing, recorder)
    spans = tracing.spans()
    by_id = {s.context.span_id: s for s in spans}
    models = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(models) == 2
    tool_span = tracing.one("execute_tool weather")
    assert tool_span.attributes["gen_ai.tool.call.id"] == "call_1"
    http = tracing.one("HTTP GET weather-api")
    assert by_id[http.parent.span_id] is tool_span
    assert len({s.context.trace_id for s in spans}) == 1


def test_react_agent_sync(tracing: Tracing, recorder: RunRecorder) -> None:
    agent = build_agent(tracing)
    result = agent.invoke({"messages": [("user", "weather in Paris?")]},
                          {"callbacks": [tracing.handler(), recorder]})
    assert result["messages"][-1].content == "The weather: sunny in Paris"
    check(tracing, recorder)


def test_react_agent_async(tracing: Tracing, recorder: RunRecorder) -> None:
    agent = build_agent(tracing)
    result = asyncio.run(agent.ainvoke({"messages": [("user", "weather in Paris?")]},
                                       {"callbacks": [tracing.handler(), recorder]}))
    assert result["messages"][-1].content == "The weather: sunny in Paris"
    check(tracing, recorder)


def test_node_spans_keep_langgraph_node_and_step_not_the_plumbing(
        tracing: Tracing, recorder: RunRecorder) -> None:
    agent = build_agent(tracing)
    agent.invoke({"messages": [("user", "weather in Paris?")]},
                 {"callbacks": [tracing.handler(), recorder], "metadata": {"team": "search"}})
    check(tracing, recorder)
    # LangChain reported LangGraph's routing metadata on the node runs, and its own versions on
    # the model runs ...
    node_runs = [m for m in recorder.metadata.values() if "langgraph_node" in m]
    assert node_runs and all("langgraph_triggers" in m for m in node_runs)
    if version("langchain-core") >= "1":  # 0.3 reports no versions in run metadata
        assert any("lc_versions" in m for m in recorder.metadata.values())
    # ... the spans keep which node and step, and the user's own metadata, not the routing.
    tools_node = tracing.one("tools")
    assert tools_node.attributes["langchain.metadata.langgraph_node"] == "tools"
    assert tools_node.attributes["langchain.metadata.langgraph_step"] == 2
    assert tools_node.attributes["langchain.metadata.team"] == "search"
    for span in tracing.spans():
        for key in ("langgraph_triggers", "langgraph_path", "langgraph_checkpoint_ns", "checkpoint_ns",
                    "lc_versions"):
            assert f"langchain.metadata.{key}" not in (span.attributes or {})
