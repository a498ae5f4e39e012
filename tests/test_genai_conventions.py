"""Issue 3: spans follow the OpenTelemetry GenAI semantic conventions.

Every test drives a real langchain-core / LangGraph run (small fake models, tools, retrievers
defined here) through ``OTelHandler`` and asserts the exported span names and attributes
exactly. The fakes are also used by ``test_content.py`` and ``test_metrics.py``.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any, TypedDict

import pytest
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    Generation,
    LLMResult,
)
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import PrivateAttr

from otel_callbacks import attributes as attr

# --- fakes ----------------------------------------------------------------------------------

USAGE = {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16,
         "input_token_details": {"cache_read": 3}, "output_token_details": {"reasoning": 2}}


class FakeChat(BaseChatModel):
    """A chat model that reports its parameters the way real integrations do (ls_* metadata)."""

    model: str = "fake-model-1"
    temperature: float = 0.3
    max_tokens: int = 77
    provider: str | None = "openai"
    chunks: list[str] = ["Hel", "lo", " wor", "ld", "!"]
    # Integrations mark their final chunk; without it LangChain adds an empty one of its own.
    mark_last: bool = True
    reply: str = "hello there"
    error: Any = None  # an exception instance to raise instead of answering
    responses: list[Any] = []  # scripted AIMessages, one per call (then `reply`)
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "fake-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_model_name=self.model, ls_model_type="chat",
                                 ls_temperature=self.temperature, ls_max_tokens=self.max_tokens)
        if self.provider:
            params["ls_provider"] = self.provider
        if stop:
            params["ls_stop"] = stop
        return params

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _next_message(self) -> AIMessage:
        if self.error is not None:
            raise self.error
        self._calls += 1
        if self._calls <= len(self.responses):
            return self.responses[self._calls - 1]
        return AIMessage(
            content=self.reply, id="resp-123", usage_metadata=USAGE,
            response_metadata={"model_name": f"{self.model}-2025", "finish_reason": "stop",
                               "id": "chatcmpl-xyz"})

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        message = self._next_message()
        reason = message.response_metadata.get("finish_reason")
        info = {"finish_reason": reason} if reason else None
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _stream_chunks(self) -> list[ChatGenerationChunk]:
        if self.error is not None:
            raise self.error
        out = [ChatGenerationChunk(message=AIMessageChunk(content=c)) for c in self.chunks[:-1]]
        out.append(ChatGenerationChunk(message=AIMessageChunk(
            content=self.chunks[-1], chunk_position="last" if self.mark_last else None,
            response_metadata={"model_name": f"{self.model}-2025", "finish_reason": "stop"},
            usage_metadata={"input_tokens": 4, "output_tokens": len(self.chunks),
                            "total_tokens": 4 + len(self.chunks)})))
        return out

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Any:
        yield from self._stream_chunks()

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> Any:
        for chunk in self._stream_chunks():
            await asyncio.sleep(0)
            yield chunk


class FakeLLM(BaseLLM):
    """A text-completion model reporting usage in llm_output["token_usage"] (OpenAI style)."""

    model_name: str = "fake-completion-1"
    temperature: float = 0.5
    max_tokens: int = 20

    @property
    def _llm_type(self) -> str:
        return "fake-llm"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="openai", ls_model_name=self.model_name,
                                 ls_model_type="llm", ls_temperature=self.temperature,
                                 ls_max_tokens=self.max_tokens)
        if stop:
            params["ls_stop"] = stop
        return params

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text="done", generation_info={"finish_reason": "length"})]
                         for _ in prompts],
            llm_output={"token_usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                        "total_tokens": 12},
                        "model_name": "fake-completion-1-001", "id": "cmpl-42"})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class DocsRetriever(BaseRetriever):
    docs: list[Document] = [Document("first doc", id="d1", metadata={"source": "a.txt"}),
                            Document("second doc", id="d2", metadata={"source": "b.txt"})]

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return list(self.docs)


class AppError(Exception):
    class Nested(Exception):
        pass


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def cfg(handler: Any, **extra: Any) -> dict[str, Any]:
    return {"callbacks": [handler], **extra}


CONTENT_KEYS = (attr.GEN_AI_INPUT_MESSAGES, attr.GEN_AI_OUTPUT_MESSAGES,
                attr.GEN_AI_SYSTEM_INSTRUCTIONS, attr.GEN_AI_TOOL_CALL_ARGUMENTS,
                attr.GEN_AI_TOOL_CALL_RESULT, attr.GEN_AI_RETRIEVAL_QUERY_TEXT,
                attr.GEN_AI_RETRIEVAL_DOCUMENTS, attr.RUN_INPUTS, attr.RUN_OUTPUTS)


# --- model spans ----------------------------------------------------------------------------

def test_chat_span_request_and_response_attributes(tracing: Any) -> None:
    handler = tracing.handler(capture_content=False)
    FakeChat().invoke([SystemMessage("be brief"), HumanMessage("hi")], stop=["END", "\n\n"],
                      config=cfg(handler))

    span = tracing.one("chat fake-model-1")
    a = dict(span.attributes)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert a[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attr.GEN_AI_REQUEST_MODEL] == "fake-model-1"
    assert a[attr.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.3)
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 77
    assert a[attr.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END", "\n\n")
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "fake-model-1-2025"
    assert a[attr.GEN_AI_RESPONSE_ID] == "chatcmpl-xyz"
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 3
    assert a[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert attr.GEN_AI_TOOL_DEFINITIONS not in a
    assert not [k for k in CONTENT_KEYS if k in a]
    # The conventions' names, straight from the semconv package.
    assert attr.GEN_AI_PROVIDER_NAME == "gen_ai.provider.name"
    assert attr.GEN_AI_USAGE_INPUT_TOKENS == "gen_ai.usage.input_tokens"


def test_response_id_falls_back_to_provider_message_id_not_langchain_run_id(tracing: Any) -> None:
    handler = tracing.handler()
    with_id = FakeChat(responses=[AIMessage("a", id="msg_provider_1")])
    with_id.invoke("hi", config=cfg(handler))
    # No provider id at all: LangChain assigns "lc_run-..." which is not a response id.
    FakeChat(model="m2", responses=[AIMessage("b")]).invoke("hi", config=cfg(handler))

    assert tracing.one("chat fake-model-1").attributes[attr.GEN_AI_RESPONSE_ID] == "msg_provider_1"
    assert attr.GEN_AI_RESPONSE_ID not in tracing.one("chat m2").attributes


@pytest.mark.parametrize(("ls_provider", "expected"), [
    ("openai", "openai"), ("anthropic", "anthropic"), ("azure", "azure.ai.openai"),
    ("google_vertexai", "gcp.vertex_ai"), ("bedrock", "aws.bedrock"), ("mistralai", "mistral_ai"),
    ("SomeNewCo", "somenewco"),
])
def test_provider_name_from_ls_provider(tracing: Any, ls_provider: str, expected: str) -> None:
    FakeChat(provider=ls_provider).invoke("hi", config=cfg(tracing.handler()))
    assert tracing.one("chat fake-model-1").attributes[attr.GEN_AI_PROVIDER_NAME] == expected


def test_provider_name_from_class_when_no_ls_provider(tracing: Any) -> None:
    class ChatAcme(FakeChat):
        pass

    ChatAcme(provider=None).invoke("hi", config=cfg(tracing.handler()))
    # Not the module path LangChain puts in serialized["id"] for non-serializable classes.
    assert tracing.one("chat fake-model-1").attributes[attr.GEN_AI_PROVIDER_NAME] == "acme"


def test_tool_definitions_offered_via_bind_tools(tracing: Any) -> None:
    FakeChat().bind_tools([add]).invoke("add 1 and 2", config=cfg(tracing.handler()))

    definitions = json.loads(tracing.one("chat fake-model-1").attributes[attr.GEN_AI_TOOL_DEFINITIONS])
    assert definitions == [{
        "type": "function", "name": "add", "description": "Add two integers.",
        "parameters": {"type": "object", "required": ["a", "b"],
                       "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}]


def test_text_completion_span_with_llm_output_token_usage(tracing: Any) -> None:
    FakeLLM().invoke("Say done", stop=["."], config=cfg(tracing.handler()))

    span = tracing.one("text_completion fake-completion-1")
    a = dict(span.attributes)
    assert span.kind is SpanKind.CLIENT
    assert a[attr.GEN_AI_OPERATION_NAME] == "text_completion"
    assert a[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attr.GEN_AI_REQUEST_MODEL] == "fake-completion-1"
    assert a[attr.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.5)
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 20
    assert a[attr.GEN_AI_REQUEST_STOP_SEQUENCES] == (".",)
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 9
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "fake-completion-1-001"
    assert a[attr.GEN_AI_RESPONSE_ID] == "cmpl-42"
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)


# --- span names -----------------------------------------------------------------------------

def test_span_names_are_operation_and_target_or_the_runs_own_name(tracing: Any) -> None:
    handler = tracing.handler()

    def shout(text: str) -> str:
        return text.upper()

    class State(TypedDict):
        x: int

    def increment(state: State) -> dict[str, int]:
        return {"x": state["x"] + 1}

    graph = StateGraph(State)
    graph.add_node("increment", increment)
    graph.add_edge(START, "increment")
    graph.add_edge("increment", END)

    RunnableLambda(shout).invoke("hi", config=cfg(handler))
    graph.compile().invoke({"x": 1}, config=cfg(handler))
    FakeChat().invoke("hi", config=cfg(handler))
    FakeLLM().invoke("hi", config=cfg(handler))
    add.invoke(tool_call("add", {"a": 1, "b": 2}, "call_1"), config=cfg(handler))
    DocsRetriever().invoke("q", config=cfg(handler))

    names = sorted(s.name for s in tracing.spans())
    assert names == sorted(["shout", "LangGraph", "increment", "chat fake-model-1",
                            "text_completion fake-completion-1", "execute_tool add",
                            "retrieval DocsRetriever"])
    assert all("." not in n and "langchain_core" not in n for n in names if n != "chat fake-model-1")


def test_run_name_overrides_class_name(tracing: Any) -> None:
    RunnableLambda(lambda x: x).invoke(1, config=cfg(tracing.handler(), run_name="normalize"))
    assert [s.name for s in tracing.spans()] == ["normalize"]


# --- tools and retrievers -------------------------------------------------------------------

def test_tool_span_attributes_from_a_tool_call(tracing: Any) -> None:
    result = add.invoke(tool_call("add", {"a": 2, "b": 3}, "call_abc"),
                        config=cfg(tracing.handler(capture_content=False)))
    assert result.content == "5" and result.tool_call_id == "call_abc"

    span = tracing.one("execute_tool add")
    a = dict(span.attributes)
    assert a[attr.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert a[attr.GEN_AI_TOOL_NAME] == "add"
    assert a[attr.GEN_AI_TOOL_CALL_ID] == "call_abc"
    assert a[attr.GEN_AI_TOOL_DESCRIPTION] == "Add two integers."
    assert a[attr.GEN_AI_TOOL_TYPE] == "function"
    assert attr.GEN_AI_TOOL_CALL_ARGUMENTS not in a and attr.GEN_AI_TOOL_CALL_RESULT not in a


def test_tool_span_without_call_id_has_none(tracing: Any) -> None:
    add.invoke({"a": 1, "b": 1}, config=cfg(tracing.handler()))
    assert attr.GEN_AI_TOOL_CALL_ID not in tracing.one("execute_tool add").attributes


def test_retriever_span_counts_documents_and_keeps_query_only_with_capture(tracing: Any) -> None:
    DocsRetriever().invoke("where is a?", config=cfg(tracing.handler(capture_content=False)))
    DocsRetriever(docs=[Document("only")]).invoke(
        "where is b?", config=cfg(tracing.handler(capture_content=True), run_name="kb"))

    plain = dict(tracing.one("retrieval DocsRetriever").attributes)
    assert plain[attr.GEN_AI_OPERATION_NAME] == "retrieval"
    assert plain[attr.RETRIEVAL_DOCUMENT_COUNT] == 2
    assert attr.GEN_AI_RETRIEVAL_QUERY_TEXT not in plain
    assert attr.GEN_AI_RETRIEVAL_DOCUMENTS not in plain

    captured = dict(tracing.one("retrieval kb").attributes)
    assert captured[attr.RETRIEVAL_DOCUMENT_COUNT] == 1
    assert captured[attr.GEN_AI_RETRIEVAL_QUERY_TEXT] == "where is b?"


# --- agents ---------------------------------------------------------------------------------

def test_run_tagged_agent_is_invoke_agent_but_its_children_are_not(tracing: Any) -> None:
    # Tags are inherited by child runs: only the tagged run itself is the agent.
    chain = RunnableLambda(lambda x: x + 1, name="plan") | RunnableLambda(lambda x: x * 2, name="act")
    assert chain.invoke(1, config=cfg(tracing.handler(), tags=["agent"], run_name="planner")) == 4

    agent = tracing.one("invoke_agent planner")
    assert agent.attributes[attr.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert agent.attributes[attr.GEN_AI_AGENT_NAME] == "planner"
    assert sorted(s.name for s in tracing.spans()) == ["act", "invoke_agent planner", "plan"]
    for child in ("plan", "act"):
        span = tracing.one(child)
        assert attr.GEN_AI_OPERATION_NAME not in span.attributes
        assert span.parent.span_id == agent.context.span_id


def test_run_with_agent_name_metadata(tracing: Any) -> None:
    RunnableLambda(lambda x: x).invoke(1, config=cfg(tracing.handler(),
                                                     metadata={"agent_name": "triage"}))
    assert tracing.one("invoke_agent triage").attributes[attr.GEN_AI_AGENT_NAME] == "triage"


def test_langgraph_react_agent_gets_invoke_agent_span(tracing: Any) -> None:
    from langgraph.prebuilt import create_react_agent

    model = FakeChat(responses=[
        AIMessage("", tool_calls=[tool_call("add", {"a": 20, "b": 22}, "call_7")],
                  response_metadata={"finish_reason": "tool_calls"}),
        AIMessage("The answer is 42", response_metadata={"finish_reason": "stop"}),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's deprecation notice
        agent = create_react_agent(model, [add], name="math_agent")
    result = agent.invoke({"messages": [("user", "what is 20 + 22?")]}, config=cfg(tracing.handler()))
    assert result["messages"][-1].content == "The answer is 42"

    root = tracing.one("invoke_agent math_agent")
    assert root.parent is None
    assert root.attributes[attr.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[attr.GEN_AI_AGENT_NAME] == "math_agent"
    chats = tracing.named("chat fake-model-1")
    assert len(chats) == 2
    assert [c.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] for c in chats] == [
        ("tool_calls",), ("stop",)]
    tool_span = tracing.one("execute_tool add")
    assert tool_span.attributes[attr.GEN_AI_TOOL_CALL_ID] == "call_7"
    assert all(s.context.trace_id == root.context.trace_id for s in tracing.spans())
    # Graph nodes keep their own names ("tools"), never become extra agents by inheritance.
    assert tracing.one("tools").attributes.get(attr.GEN_AI_OPERATION_NAME) is None


def test_create_agent_style_lc_agent_name_marks_only_the_agent_graph(tracing: Any) -> None:
    # LangChain's create_agent names the graph after the agent and puts lc_agent_name in the
    # (inherited) metadata; only the graph whose name it is becomes the agent span.
    class State(TypedDict):
        x: int

    graph = StateGraph(State)
    graph.add_node("think", lambda s: {"x": s["x"] + 1})
    graph.add_edge(START, "think")
    graph.add_edge("think", END)
    app = graph.compile(name="researcher").with_config(metadata={"lc_agent_name": "researcher"})
    app.invoke({"x": 0}, config=cfg(tracing.handler()))

    assert tracing.one("invoke_agent researcher").attributes[attr.GEN_AI_AGENT_NAME] == "researcher"
    assert sorted(s.name for s in tracing.spans()) == ["invoke_agent researcher", "think"]


def _agent_events(tracing: Any, capture: bool) -> tuple[Any, Any]:
    manager = CallbackManager([tracing.handler(capture_content=capture)])
    run = manager.on_chain_start({"name": "AgentExecutor"}, {"input": "q"}, name="AgentExecutor")
    run.on_agent_action(AgentAction(tool="search", tool_input={"query": "otel"},
                                    log="Thought: I should search"))
    run.on_agent_finish(AgentFinish(return_values={"output": "found"}, log="Final Answer: found"))
    run.on_chain_end({"output": "found"})
    span = tracing.one("invoke_agent AgentExecutor")
    events = {e.name: dict(e.attributes) for e in span.events}
    return events[attr.EVENT_AGENT_ACTION], events[attr.EVENT_AGENT_FINISH]


def test_agent_action_and_finish_events_without_content(tracing: Any) -> None:
    action, finish = _agent_events(tracing, capture=False)
    assert action == {attr.GEN_AI_TOOL_NAME: "search"}
    assert finish == {}


def test_agent_action_and_finish_events_with_content(tracing: Any) -> None:
    action, finish = _agent_events(tracing, capture=True)
    assert action[attr.GEN_AI_TOOL_NAME] == "search"
    assert json.loads(action["tool_input"]) == {"query": "otel"}
    assert action["log"] == "Thought: I should search"
    assert json.loads(finish["return_values"]) == {"output": "found"}
    assert finish["log"] == "Final Answer: found"


# --- streaming ------------------------------------------------------------------------------

def _stream_checks(span: Any, chunks: int) -> None:
    a = dict(span.attributes)
    assert a[attr.LLM_TOKEN_COUNT] == chunks
    ttfc = a[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 < ttfc <= (span.end_time - span.start_time) / 1e9
    first = [e for e in span.events if e.name == attr.EVENT_FIRST_TOKEN]
    assert len(first) == 1 and first[0].attributes["index"] == 1
    # Measured from the run's start (taken right after the span's) to the first_token event.
    assert 0 <= (first[0].timestamp - span.start_time) - ttfc * 1e9 < 5e6


def test_stream_records_first_chunk_token_count_and_usage(tracing: Any) -> None:
    model = FakeChat()
    text = "".join(c.content for c in model.stream("hi", config=cfg(tracing.handler())))
    assert text == "Hello world!"

    span = tracing.one("chat fake-model-1")
    _stream_checks(span, chunks=5)
    assert span.status.status_code is StatusCode.UNSET
    assert attr.RUN_ABANDONED not in span.attributes
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    # Default cap is 8 events; 5 chunks -> first_token + 4 token events, no content.
    tokens = [e for e in span.events if e.name in (attr.EVENT_FIRST_TOKEN, attr.EVENT_TOKEN)]
    assert [e.attributes["index"] for e in tokens] == [1, 2, 3, 4, 5]
    assert all("content" not in e.attributes for e in tokens)


def test_langchains_synthetic_final_chunk_is_not_a_token(tracing: Any) -> None:
    for _ in FakeChat(mark_last=False).stream("hi", config=cfg(tracing.handler())):
        pass
    assert tracing.one("chat fake-model-1").attributes[attr.LLM_TOKEN_COUNT] == 5


def test_token_events_are_bounded_but_the_count_is_exact(tracing: Any) -> None:
    model = FakeChat(chunks=[f"t{i} " for i in range(40)])
    for _ in model.stream("hi", config=cfg(tracing.handler(max_token_events=3))):
        pass

    span = tracing.one("chat fake-model-1")
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 40
    assert [(e.name, e.attributes["index"]) for e in span.events] == [
        (attr.EVENT_FIRST_TOKEN, 1), (attr.EVENT_TOKEN, 2), (attr.EVENT_TOKEN, 3)]


def test_interleaved_streams_count_their_own_tokens(tracing: Any) -> None:
    handler = tracing.handler(max_token_events=2)
    first = FakeChat(chunks=[f"a{i}" for i in range(7)]).stream("hi", config=cfg(handler))
    second = FakeChat(chunks=[f"b{i}" for i in range(4)]).stream("hi", config=cfg(handler))
    for a, b in zip(first, second):  # tokens alternate between the two runs
        pass
    list(first)
    list(second)
    counts = sorted(s.attributes[attr.LLM_TOKEN_COUNT] for s in tracing.spans())
    assert counts == [4, 7]
    assert all(len(s.events) == 2 for s in tracing.spans())


def test_streams_on_threads_count_their_own_tokens(tracing: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    handler = tracing.handler()

    def consume(n: int) -> int:
        model = FakeChat(chunks=[f"t{i}" for i in range(n)])
        return sum(1 for _ in model.stream("hi", config=cfg(handler)))

    sizes = [50 + 7 * i for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(consume, sizes)) == sizes
    counts = sorted(s.attributes[attr.LLM_TOKEN_COUNT] for s in tracing.spans())
    assert counts == sorted(sizes)


def test_token_after_the_run_ended_is_ignored(tracing: Any, caplog: Any) -> None:
    handler = tracing.handler()
    manager = CallbackManager(handlers=[handler])
    run = manager.on_chat_model_start({"name": "m"}, [[HumanMessage("hi")]])[0]
    run.on_llm_new_token("a")
    run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("a"))]]))
    with caplog.at_level("DEBUG"):
        run.on_llm_new_token("late")  # out of order: the run already ended
    span = tracing.spans()[0]
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 1
    assert [e.name for e in span.events] == [attr.EVENT_FIRST_TOKEN]
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


def test_stream_abandoned_after_three_chunks_ends_its_span(tracing: Any) -> None:
    model = FakeChat(chunks=[f"c{i}" for i in range(10)])
    stream = model.stream("hi", config=cfg(tracing.handler()))
    for index, _chunk in enumerate(stream):
        if index == 2:
            break
    assert tracing.spans() == []  # still open while the generator is alive
    stream.close()
    del stream

    span = tracing.one("chat fake-model-1")
    assert span.end_time is not None
    assert span.attributes[attr.RUN_ABANDONED] is True
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 3
    assert span.status.status_code is StatusCode.UNSET
    assert attr.ERROR_TYPE not in span.attributes
    assert not [e for e in span.events if e.name == "exception"]


def test_astream_records_first_chunk_and_token_count(tracing: Any) -> None:
    async def consume() -> str:
        model = FakeChat()
        return "".join([c.content async for c in model.astream("hi", config=cfg(tracing.handler()))])

    assert asyncio.run(consume()) == "Hello world!"
    span = tracing.one("chat fake-model-1")
    _stream_checks(span, chunks=5)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 4
    assert attr.RUN_ABANDONED not in span.attributes


def test_astream_abandoned_ends_its_span(tracing: Any) -> None:
    async def consume_three() -> None:
        model = FakeChat(chunks=[f"c{i}" for i in range(10)])
        stream = model.astream("hi", config=cfg(tracing.handler()))
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()

    asyncio.run(consume_three())
    span = tracing.one("chat fake-model-1")
    assert span.attributes[attr.RUN_ABANDONED] is True
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 3
    assert span.status.status_code is StatusCode.UNSET
    assert attr.ERROR_TYPE not in span.attributes


# --- errors ---------------------------------------------------------------------------------

def _assert_error_span(span: Any, error_type: str, message: str) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attr.ERROR_TYPE] == error_type
    exceptions = [e for e in span.events if e.name == "exception"]
    assert len(exceptions) == 1
    assert exceptions[0].attributes["exception.type"] == error_type
    assert exceptions[0].attributes["exception.message"] == message


def test_model_error_sets_error_type_status_and_exception_event(tracing: Any) -> None:
    with pytest.raises(AppError):
        FakeChat(error=AppError("quota exceeded")).invoke("hi", config=cfg(tracing.handler()))
    _assert_error_span(tracing.one("chat fake-model-1"),
                       f"{AppError.__module__}.AppError", "quota exceeded")


def test_nested_exception_class_uses_qualified_name(tracing: Any) -> None:
    def fail(_: Any) -> None:
        raise AppError.Nested("inner")

    with pytest.raises(AppError.Nested):
        RunnableLambda(fail).invoke(1, config=cfg(tracing.handler()))
    _assert_error_span(tracing.one("fail"), f"{AppError.__module__}.AppError.Nested", "inner")


def test_builtin_errors_in_tools_and_streams(tracing: Any) -> None:
    @tool
    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    handler = tracing.handler()
    with pytest.raises(ZeroDivisionError):
        divide.invoke({"a": 1, "b": 0}, config=cfg(handler))
    with pytest.raises(KeyError):
        for _ in FakeChat(error=KeyError("missing")).stream("hi", config=cfg(handler)):
            pass

    _assert_error_span(tracing.one("execute_tool divide"), "ZeroDivisionError", "division by zero")
    _assert_error_span(tracing.one("chat fake-model-1"), "KeyError", "'missing'")
