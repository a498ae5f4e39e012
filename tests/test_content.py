"""Issue 3: message content is opt-in, structured as the GenAI conventions say, capped,
passed through the user's redaction hook, and secrets never leave the process."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import CallbackManager
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import SecretStr
from test_genai_conventions import (
    CONTENT_KEYS,
    DocsRetriever,
    FakeChat,
    FakeLLM,
    add,
    cfg,
    tool_call,
)

from otel_callbacks import attributes as attr
from otel_callbacks.content import CAPTURE_ENV

# Event attributes that carry content (token text, agent input/log, custom event data...).
EVENT_CONTENT_KEYS = ("content", "tool_input", "log", "return_values", "text", "data")
MARKER = re.compile(r"\.\.\.\[truncated \d+ chars\]$")


@pytest.fixture(autouse=True)
def _no_capture_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)


def content_values(tracing: Any) -> list[tuple[str, str, Any]]:
    """(span name, key, value) of every content value exported, on spans and their events."""
    found = []
    for span in tracing.spans():
        for key, value in (span.attributes or {}).items():
            if key in CONTENT_KEYS:
                found.append((span.name, key, value))
        for event in span.events:
            for key, value in (event.attributes or {}).items():
                if key in EVENT_CONTENT_KEYS:
                    found.append((span.name, f"{event.name}.{key}", value))
    return found


def run_everything(handler: Any, prompt: str = "add 2 and 3") -> None:
    """One run of each kind that can carry content."""
    model = FakeChat()
    model.invoke([SystemMessage("be brief"), HumanMessage(prompt)], config=cfg(handler))
    for _ in FakeChat(model="fake-stream-1").stream(prompt, config=cfg(handler)):
        pass
    FakeLLM().invoke(prompt, config=cfg(handler))
    add.invoke(tool_call("add", {"a": 2, "b": 3}, "call_1"), config=cfg(handler))
    DocsRetriever().invoke(prompt, config=cfg(handler))

    def step(x: str) -> str:
        dispatch_custom_event("progress", {"note": x})
        return x + "!"

    RunnableLambda(step).invoke(prompt, config=cfg(handler))
    run = CallbackManager([handler]).on_chain_start({"name": "AgentExecutor"}, {"input": prompt},
                                                    name="AgentExecutor")
    run.on_agent_action(AgentAction(tool="add", tool_input={"a": 2}, log=f"Thought: {prompt}"))
    run.on_text(f"observation for {prompt}")
    run.on_agent_finish(AgentFinish(return_values={"output": "5"}, log="Final Answer: 5"))
    run.on_chain_end({"output": "5"})


# --- opt-in ---------------------------------------------------------------------------------

def test_no_content_by_default(tracing: Any) -> None:
    run_everything(tracing.handler())
    assert len(tracing.spans()) == 7
    assert content_values(tracing) == []
    # What is not content is still there.
    assert tracing.one("retrieval DocsRetriever").attributes[attr.RETRIEVAL_DOCUMENT_COUNT] == 2
    assert tracing.one("chat fake-model-1").attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert tracing.one("chat fake-stream-1").attributes[attr.LLM_TOKEN_COUNT] == 5


def test_constructor_flag_turns_content_on(tracing: Any) -> None:
    run_everything(tracing.handler(capture_content=True))
    keys = {key for _, key, _ in content_values(tracing)}
    assert keys == {
        attr.GEN_AI_INPUT_MESSAGES, attr.GEN_AI_OUTPUT_MESSAGES, attr.GEN_AI_SYSTEM_INSTRUCTIONS,
        attr.GEN_AI_TOOL_CALL_ARGUMENTS, attr.GEN_AI_TOOL_CALL_RESULT,
        attr.GEN_AI_RETRIEVAL_QUERY_TEXT, attr.GEN_AI_RETRIEVAL_DOCUMENTS,
        attr.RUN_INPUTS, attr.RUN_OUTPUTS,
        f"{attr.EVENT_FIRST_TOKEN}.content", f"{attr.EVENT_TOKEN}.content",
        f"{attr.EVENT_AGENT_ACTION}.tool_input", f"{attr.EVENT_AGENT_ACTION}.log",
        f"{attr.EVENT_AGENT_FINISH}.return_values", f"{attr.EVENT_AGENT_FINISH}.log",
        f"{attr.EVENT_TEXT}.text", f"{attr.EVENT_CUSTOM}.data",
    }


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_env_var_turns_content_on(tracing: Any, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(CAPTURE_ENV, value)
    FakeChat().invoke("hi", config=cfg(tracing.handler()))
    span = tracing.one("chat fake-model-1")
    assert json.loads(span.attributes[attr.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_env_var_other_values_keep_content_off(tracing: Any, monkeypatch: pytest.MonkeyPatch,
                                               value: str) -> None:
    monkeypatch.setenv(CAPTURE_ENV, value)
    run_everything(tracing.handler())
    assert content_values(tracing) == []


def test_constructor_flag_overrides_env_var(tracing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    run_everything(tracing.handler(capture_content=False))
    assert content_values(tracing) == []


# --- structured form ------------------------------------------------------------------------

def test_chat_messages_in_the_conventions_json_form(tracing: Any) -> None:
    history = [
        SystemMessage("be brief"),
        HumanMessage("add 2 and 3"),
        AIMessage("", tool_calls=[tool_call("add", {"a": 2, "b": 3}, "call_1")]),
        ToolMessage("5", tool_call_id="call_1"),
    ]
    FakeChat(reply="It is 5.").invoke(history, config=cfg(tracing.handler(capture_content=True)))

    a = tracing.one("chat fake-model-1").attributes
    assert json.loads(a[attr.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "be brief"}]
    assert json.loads(a[attr.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "add 2 and 3"}]},
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "5"}]},
    ]
    assert json.loads(a[attr.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It is 5."}],
         "finish_reason": "stop"}]


def test_output_tool_calls_and_reasoning_parts(tracing: Any) -> None:
    handler = tracing.handler(capture_content=True)
    FakeChat(responses=[AIMessage(
        [{"type": "thinking", "thinking": "need the tool"},
         {"type": "tool_use", "id": "call_9", "name": "add", "input": {"a": 1, "b": 1}}],
        tool_calls=[tool_call("add", {"a": 1, "b": 1}, "call_9")],
        response_metadata={"finish_reason": "tool_calls"})]).invoke("1+1?", config=cfg(handler))

    output = json.loads(tracing.one("chat fake-model-1").attributes[attr.GEN_AI_OUTPUT_MESSAGES])
    assert output == [{"role": "assistant", "finish_reason": "tool_calls", "parts": [
        {"type": "reasoning", "content": "need the tool"},
        # The provider's tool_use block and LangChain's tool_calls are one call, recorded once.
        {"type": "tool_call", "id": "call_9", "name": "add", "arguments": {"a": 1, "b": 1}},
    ]}]


def test_text_completion_messages_keep_their_finish_reason(tracing: Any) -> None:
    FakeLLM().invoke("Say done", config=cfg(tracing.handler(capture_content=True)))
    a = tracing.one("text_completion fake-completion-1").attributes
    assert json.loads(a[attr.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say done"}]}]
    assert json.loads(a[attr.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "done"}], "finish_reason": "length"}]


class TwoChoiceChat(FakeChat):
    """n=2 style result: the first choice reports no finish reason, the second does."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[
            ChatGeneration(message=AIMessage("first")),
            ChatGeneration(message=AIMessage("second"), generation_info={"finish_reason": "length"})])


def test_each_output_message_gets_its_own_finish_reason(tracing: Any) -> None:
    TwoChoiceChat().invoke("hi", config=cfg(tracing.handler(capture_content=True)))
    span = tracing.one("chat fake-model-1")
    assert span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert json.loads(span.attributes[attr.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "first"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "second"}],
         "finish_reason": "length"}]


def test_streamed_output_message_and_token_contents(tracing: Any) -> None:
    for _ in FakeChat().stream("hi", config=cfg(tracing.handler(capture_content=True))):
        pass
    span = tracing.one("chat fake-model-1")
    assert json.loads(span.attributes[attr.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello world!"}],
         "finish_reason": "stop"}]
    assert [e.attributes["content"] for e in span.events] == ["Hel", "lo", " wor", "ld", "!"]


def test_async_stream_content(tracing: Any) -> None:
    async def consume() -> None:
        async for _ in FakeChat().astream("hi", config=cfg(tracing.handler(capture_content=True))):
            pass

    asyncio.run(consume())
    span = tracing.one("chat fake-model-1")
    assert json.loads(span.attributes[attr.GEN_AI_OUTPUT_MESSAGES])[0]["parts"] == [
        {"type": "text", "content": "Hello world!"}]


def test_tool_arguments_result_and_retriever_documents(tracing: Any) -> None:
    handler = tracing.handler(capture_content=True)
    add.invoke(tool_call("add", {"a": 2, "b": 3}, "call_1"), config=cfg(handler))
    DocsRetriever().invoke("where?", config=cfg(handler))

    tool_attrs = tracing.one("execute_tool add").attributes
    assert json.loads(tool_attrs[attr.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"a": 2, "b": 3}
    assert tool_attrs[attr.GEN_AI_TOOL_CALL_RESULT] == "5"
    retriever = tracing.one("retrieval DocsRetriever").attributes
    assert retriever[attr.GEN_AI_RETRIEVAL_QUERY_TEXT] == "where?"
    assert json.loads(retriever[attr.GEN_AI_RETRIEVAL_DOCUMENTS]) == [
        {"id": "d1", "content": "first doc", "metadata": {"source": "a.txt"}},
        {"id": "d2", "content": "second doc", "metadata": {"source": "b.txt"}}]


# --- cap ------------------------------------------------------------------------------------

def test_every_content_value_is_capped_with_a_marker(tracing: Any) -> None:
    cap = 64
    long_prompt = "word " * 400
    handler = tracing.handler(capture_content=True, max_content_length=cap)
    run_everything(handler, prompt=long_prompt)
    add.invoke({"a": 10**200, "b": 1}, config=cfg(handler, run_name="big_add"))
    DocsRetriever(docs=[Document("d" * 5000)]).invoke("q", config=cfg(handler, run_name="big_docs"))

    values = content_values(tracing)
    assert values
    for span_name, key, value in values:
        assert isinstance(value, str)
        assert len(MARKER.sub("", value)) <= cap, (span_name, key, value)
    cut = {(s, k) for s, k, v in values if MARKER.search(v)}
    for expected in [("chat fake-model-1", attr.GEN_AI_INPUT_MESSAGES),
                     ("text_completion fake-completion-1", attr.GEN_AI_INPUT_MESSAGES),
                     ("retrieval DocsRetriever", attr.GEN_AI_RETRIEVAL_QUERY_TEXT),
                     ("execute_tool big_add", attr.GEN_AI_TOOL_CALL_RESULT),
                     ("retrieval big_docs", attr.GEN_AI_RETRIEVAL_DOCUMENTS),
                     ("invoke_agent AgentExecutor", f"{attr.EVENT_AGENT_ACTION}.log")]:
        assert expected in cut, expected
    # Short values are not touched.
    assert ("retrieval big_docs", attr.GEN_AI_RETRIEVAL_QUERY_TEXT, "q") in values


def test_marker_says_how_much_was_cut(tracing: Any) -> None:
    DocsRetriever().invoke("x" * 100, config=cfg(tracing.handler(capture_content=True,
                                                                 max_content_length=10)))
    query = tracing.one("retrieval DocsRetriever").attributes[attr.GEN_AI_RETRIEVAL_QUERY_TEXT]
    assert query == "x" * 10 + "...[truncated 90 chars]"


# --- redaction hook -------------------------------------------------------------------------

def test_redact_hook_sees_every_content_value_before_export(tracing: Any) -> None:
    seen: list[str] = []

    def redact(text: str) -> str:
        seen.append(text)
        return "<<" + text.replace("2 and 3", "N and M") + ">>"

    run_everything(tracing.handler(capture_content=True, redact=redact))
    values = content_values(tracing)
    assert len(values) >= 17
    assert all(v.startswith("<<") and v.endswith(">>") for _, _, v in values), values
    assert len(seen) == len(values)  # once per exported value, nothing bypasses it
    assert not [v for _, _, v in values if "2 and 3" in v]
    inputs = tracing.one("chat fake-model-1").attributes[attr.GEN_AI_INPUT_MESSAGES]
    assert "add N and M" in inputs


def test_redact_hook_returning_none_drops_the_value(tracing: Any) -> None:
    def redact(text: str) -> str | None:
        return None if "secret plan" in text else text

    handler = tracing.handler(capture_content=True, redact=redact)
    FakeChat(reply="the secret plan").invoke("tell me", config=cfg(handler))
    a = tracing.one("chat fake-model-1").attributes
    assert attr.GEN_AI_OUTPUT_MESSAGES not in a
    assert json.loads(a[attr.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == "tell me"


def test_failing_redact_hook_drops_content_and_never_breaks_the_app(tracing: Any) -> None:
    def redact(text: str) -> str:
        raise RuntimeError("hook bug")

    handler = tracing.handler(capture_content=True, redact=redact)
    result = FakeChat().invoke("hi", config=cfg(handler))
    assert result.content == "hello there"
    span = tracing.one("chat fake-model-1")
    assert content_values(tracing) == []
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 5


# --- secrets --------------------------------------------------------------------------------

SK = "sk-proj-Z9y8X7w6V5u4T3s2R1q0"
SECRETS = {
    "api_key": "plain-api-key-value-1",
    "openai_api_key": "plain-openai-key-value-2",
    "password": "hunter2-password-value-3",
    "access_token": "plain-access-token-value-4",
    "secret_str": "secretstr-value-5",
    "sk": SK,
}


class KeyedChat(FakeChat):
    """A model holding its API key as a SecretStr, like real integrations."""

    api_key: SecretStr = SecretStr(SECRETS["secret_str"])

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "api_key": self.api_key}


def exported_strings(tracing: Any) -> list[str]:
    out = []
    for span in tracing.spans():
        out.append(span.name)
        out.append(str(span.status.description))
        out.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            out.append(event.name)
            out.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    return out


@pytest.mark.parametrize("capture", [False, True])
def test_secrets_are_never_exported(tracing: Any, capture: bool) -> None:
    metadata = {"api_key": SECRETS["api_key"], "openai_api_key": SECRETS["openai_api_key"],
                "password": SECRETS["password"], "access_token": SECRETS["access_token"],
                "client_secret": SecretStr(SECRETS["secret_str"]), "note": f"key is {SK}",
                "max_tokens": 5}
    handler = tracing.handler(capture_content=capture)
    config = cfg(handler, metadata=metadata, tags=[SK, "ok-tag"])
    KeyedChat(reply=f"your key: {SK}").invoke(
        [SystemMessage(f"use {SK}"), HumanMessage(f"my password is {SK}")], config=config)
    for _ in KeyedChat(chunks=[SK, " more"]).stream(f"echo {SK}", config=config):
        pass
    add.invoke({"a": 1, "b": 2}, config=config)
    RunnableLambda(lambda x: x).invoke({"openai_api_key": SECRETS["openai_api_key"],
                                        "nested": {"password": SECRETS["password"]},
                                        "token": SecretStr(SECRETS["secret_str"])}, config=config)
    DocsRetriever(docs=[Document(f"doc with {SK}",
                                 metadata={"api_key": SECRETS["api_key"]})]).invoke(
        f"find {SK}", config=config)

    exported = "\n".join(exported_strings(tracing))
    assert len(tracing.spans()) == 5
    for name, secret in SECRETS.items():
        assert secret not in exported, name
    # The keys stay visible (so users see that something was there); counts are not secrets.
    chat = tracing.named("chat fake-model-1")[0].attributes
    assert chat["langchain.metadata.api_key"] == "[REDACTED]"
    assert chat["langchain.metadata.client_secret"] == "[REDACTED]"
    assert chat["langchain.metadata.max_tokens"] == 5
    assert chat[attr.RUN_TAGS] == ("[REDACTED]", "ok-tag")
    if capture:
        assert "[REDACTED]" in chat[attr.GEN_AI_INPUT_MESSAGES]


def test_secrets_in_error_messages_are_not_exported(tracing: Any) -> None:
    with pytest.raises(ValueError):
        FakeChat(error=ValueError(f"Incorrect API key provided: {SK}")).invoke(
            "hi", config=cfg(tracing.handler()))
    exported = "\n".join(exported_strings(tracing))
    assert "Incorrect API key provided: [REDACTED]" in exported
    assert SK not in exported
