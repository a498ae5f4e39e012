"""The real provider clients (langchain-openai, langchain-anthropic, langchain-ollama) against
local servers speaking each API's wire format (``provider_servers.py``): what the spans say is
checked against what the client really sent and received, sync and async, invoke and stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from otel_callbacks import attributes as attr
from otel_callbacks.handlers import BaseCallbackHandler

from provider_servers import (
    ANTHROPIC_USAGE,
    WireServer,
    anthropic_message,
    anthropic_stream,
    error_reply,
    ollama_stream,
    openai_chat,
    openai_chat_stream,
    openai_tool_call,
    responses,
    responses_stream,
)

pytest.importorskip("langchain_core")

# Not shaped like any provider's key, so only our own never-export rule can keep it out.
API_KEY = "test-credential-Zq81vLm4Kp0Xw7"
MODES = ("invoke", "ainvoke", "stream", "astream")
WORDS = ["One ", "two ", "three ", "four ", "five."]
WEATHER_CALL = {"id": "call_abc123", "name": "get_weather", "arguments": {"city": "Paris"}}


def message_text(message: Any) -> str:
    """A message's text: a method in langchain-core 0.3, a ``str`` property in 1.x."""
    text = message.text
    return text if isinstance(text, str) else text()


def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    wire = WireServer()
    yield wire
    wire.stop()


class ErrorRecorder(BaseCallbackHandler):
    """Beside OTelHandler: the exception object LangChain reported for the model run."""

    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors.append(error)


def call(model: Any, mode: str, handlers: list[Any], prompt: str = "What is the weather?") -> Any:
    """Run ``model`` the way ``mode`` says; a stream's chunks are merged into one message."""
    config = {"callbacks": handlers}
    if mode == "invoke":
        return model.invoke(prompt, config=config)
    if mode == "ainvoke":
        return asyncio.run(model.ainvoke(prompt, config=config))
    if mode == "stream":
        chunks = list(model.stream(prompt, config=config))
    else:
        async def collect() -> list[Any]:
            return [c async for c in model.astream(prompt, config=config)]
        chunks = asyncio.run(collect())
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


def model_span(tracing: Any) -> Any:
    spans = [s for s in tracing.spans() if s.instrumentation_scope.name == "otel_callbacks"]
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def assert_no_key_exported(tracing: Any) -> None:
    for span in tracing.spans():  # attributes, events, status, links and resource, as exported
        assert API_KEY not in span.to_json(), f"API key exported in {span.name}"


def assert_common(span: Any, server: WireServer, provider: str, model: str) -> None:
    a = span.attributes
    assert span.name == f"chat {model}" and span.kind is SpanKind.CLIENT
    assert a[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attr.GEN_AI_PROVIDER_NAME] == provider
    assert a[attr.GEN_AI_REQUEST_MODEL] == model
    assert (a[attr.SERVER_ADDRESS], a[attr.SERVER_PORT]) == ("127.0.0.1", server.port)
    assert span.status.status_code is StatusCode.UNSET


# The servers pause this long after a stream's first chunk: long enough that a loaded machine's
# scheduling delays (tens of ms) cannot blur the two timestamps the stream tests tell apart.
PAUSE = 0.5


def paused(reply: Any) -> Any:
    reply.pause_after_first = PAUSE
    return reply


def assert_streaming(span: Any, mode: str, tokens: int, first: str,
                     first_chunk_has_content: bool = False) -> None:
    """Token count and first-token event follow content chunks; time to first chunk is the
    provider's first chunk, content or not: a content-less opening chunk (then the server's
    pause) comes before the first token, a content chunk is both."""
    a = span.attributes
    if not mode.endswith("stream"):
        for key in (attr.LLM_TOKEN_COUNT, attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                    attr.GEN_AI_REQUEST_STREAM):
            assert key not in a
        return
    assert a[attr.GEN_AI_REQUEST_STREAM] is True
    assert a[attr.LLM_TOKEN_COUNT] == tokens
    [event] = [e for e in span.events if e.name == attr.EVENT_FIRST_TOKEN]
    assert event.attributes["content"] == first
    ttfc_ns = a[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] * 1e9
    first_token_ns = event.timestamp - span.start_time
    assert 0 < ttfc_ns <= first_token_ns
    if first_chunk_has_content:
        # The same instant, apart only by the span's start and the run's start: far less
        # than the pause a content-less first chunk would put between them.
        assert first_token_ns - ttfc_ns < 0.5 * PAUSE * 1e9
    else:  # were both taken at the first token, they would be as close as above
        assert first_token_ns - ttfc_ns >= 0.1 * PAUSE * 1e9
    token_events = [e for e in span.events if e.name in (attr.EVENT_FIRST_TOKEN, attr.EVENT_TOKEN)]
    assert all(e.attributes["content"] for e in token_events)  # no content-less chunk counted


def output_parts(span: Any) -> list[dict[str, Any]]:
    [message] = json.loads(span.attributes[attr.GEN_AI_OUTPUT_MESSAGES])
    assert message["role"] == "assistant"
    return message["parts"]


def tool_calls_of(span: Any) -> list[dict[str, Any]]:
    return [p for p in output_parts(span) if p["type"] == "tool_call"]


def assert_tool_definitions(span: Any, sent_tools: list[dict[str, Any]]) -> None:
    definitions = json.loads(span.attributes[attr.GEN_AI_TOOL_DEFINITIONS])
    assert [d["name"] for d in definitions] == ["get_weather"]
    assert definitions[0]["parameters"]["properties"] == {"city": {"type": "string"}}
    assert len(sent_tools) == 1 and json.dumps(sent_tools[0]).count("get_weather") == 1


# --- OpenAI Chat Completions ----------------------------------------------------------------
def openai_model(server: WireServer, **kwargs: Any) -> Any:
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        model="gpt-4o-mini", base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0,
        temperature=0.2, max_tokens=50, top_p=0.9, stream_usage=True, **kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_openai_chat_completions(tracing: Any, server: WireServer, mode: str) -> None:
    call_json = openai_tool_call(WEATHER_CALL["id"], WEATHER_CALL["name"], WEATHER_CALL["arguments"])
    if mode.endswith("stream"):
        server.script(paused(openai_chat_stream("chatcmpl-s1", "gpt-4o-mini-2024-07-18", WORDS,
                                                [call_json])))
    else:
        server.script(openai_chat("chatcmpl-i1", "gpt-4o-mini-2024-07-18", "".join(WORDS), [call_json]))
    model = openai_model(server).bind_tools([get_weather])
    result = call(model, mode, [tracing.handler(capture_content=True)])

    assert result.content == "".join(WORDS)
    [request] = server.requests
    sent = request.body
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"  # the key was really used
    span = model_span(tracing)
    a = span.attributes
    assert_common(span, server, "openai", "gpt-4o-mini")
    assert (sent["model"], sent["temperature"], sent["top_p"]) == ("gpt-4o-mini", 0.2, 0.9)
    assert (a[attr.GEN_AI_REQUEST_TEMPERATURE], a[attr.GEN_AI_REQUEST_TOP_P]) == (0.2, 0.9)
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == sent["max_completion_tokens"] == 50
    assert_tool_definitions(span, sent["tools"])
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert (a[attr.GEN_AI_USAGE_INPUT_TOKENS], a[attr.GEN_AI_USAGE_OUTPUT_TOKENS]) == (21, 5)
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 16
    assert a[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert tool_calls_of(span) == [{"type": "tool_call", **WEATHER_CALL}]
    assert result.tool_calls[0]["id"] == WEATHER_CALL["id"]
    if mode.endswith("stream"):
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert a[attr.GEN_AI_RESPONSE_ID] == "chatcmpl-s1"
        # 5 words + 2 argument pieces; not the role-only, finish or usage-only chunks.
        assert_streaming(span, mode, tokens=7, first="One ")
    else:
        assert a[attr.GEN_AI_RESPONSE_ID] == "chatcmpl-i1"
        assert_streaming(span, mode, tokens=0, first="")
    assert_no_key_exported(tracing)


# --- OpenAI Responses API -------------------------------------------------------------------
def responses_usage_details_reach_callbacks() -> bool:
    """Whether the installed langchain-openai passes on the Responses API's cached and reasoning
    token counts. Before 0.3.27 it drops ``usage.input_tokens_details`` and reads reasoning
    tokens under a misspelt key (``output_token_details``), and it keeps the raw usage out of
    response_metadata, llm_output and generation_info: no callback gets either count, in any
    shape, so no tracer can record them (only the SDK's response object has them)."""
    from packaging.version import Version

    return Version(version("langchain-openai")) >= Version("0.3.27")


@pytest.mark.parametrize("mode", MODES)
def test_openai_responses_api(tracing: Any, server: WireServer, mode: str) -> None:
    call_json = openai_tool_call(WEATHER_CALL["id"], WEATHER_CALL["name"], WEATHER_CALL["arguments"])
    streaming = mode.endswith("stream")
    server.script(paused(responses_stream("resp_s1", "gpt-4o-mini-2024-07-18", WORDS, [call_json]))
                  if streaming else
                  responses("resp_i1", "gpt-4o-mini-2024-07-18", "".join(WORDS), [call_json]))
    model = openai_model(server, use_responses_api=True).bind_tools([get_weather])
    result = call(model, mode, [tracing.handler(capture_content=True)])

    assert message_text(result) == "".join(WORDS)
    [request] = server.requests
    sent = request.body
    assert request.path == "/v1/responses" and sent["stream"] is streaming
    span = model_span(tracing)
    a = span.attributes
    assert_common(span, server, "openai", "gpt-4o-mini")
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == sent["max_output_tokens"] == 50
    assert (sent["temperature"], a[attr.GEN_AI_REQUEST_TEMPERATURE]) == (0.2, 0.2)
    assert_tool_definitions(span, sent["tools"])
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert a[attr.GEN_AI_RESPONSE_ID] == ("resp_s1" if streaming else "resp_i1")
    assert (a[attr.GEN_AI_USAGE_INPUT_TOKENS], a[attr.GEN_AI_USAGE_OUTPUT_TOKENS]) == (21, 5)
    if responses_usage_details_reach_callbacks():
        assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 16
        assert a[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    else:  # nothing made up either
        assert attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in a
        assert attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in a
    # A completed response that called a tool, in Chat Completions' words.
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert tool_calls_of(span) == [{"type": "tool_call", **WEATHER_CALL}]
    assert result.tool_calls[0]["id"] == WEATHER_CALL["id"]
    # 5 text deltas + 2 argument deltas; not created / in_progress / item / part / done events.
    assert_streaming(span, mode, tokens=7, first="One ")
    assert_no_key_exported(tracing)


# --- Anthropic Messages ---------------------------------------------------------------------
def anthropic_model(server: WireServer, tracing: Any = None, **kwargs: Any) -> Any:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    model = langchain_anthropic.ChatAnthropic(
        model="claude-sonnet-4-5", base_url=server.url, api_key=API_KEY, max_retries=0,
        temperature=0.3, max_tokens=100, top_k=5, **kwargs)
    if tracing is not None:
        # The anthropic SDK's own spans, on the test's provider (else the global one).
        options = {"tracer_provider": tracing.provider}
        try:
            model.__dict__["_client"] = model._client.copy(open_telemetry=options)
            model.__dict__["_async_client"] = model._async_client.copy(open_telemetry=options)
        except TypeError:
            pytest.skip("this anthropic SDK has no built-in OpenTelemetry tracing")
    return model


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_messages(tracing: Any, server: WireServer, mode: str) -> None:
    tool_use = {"id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
    streaming = mode.endswith("stream")
    server.script(paused(anthropic_stream("msg_s1", "claude-sonnet-4-5-20250929", WORDS, [tool_use]))
                  if streaming else
                  anthropic_message("msg_i1", "claude-sonnet-4-5-20250929", "".join(WORDS), [tool_use]))
    model = anthropic_model(server).bind_tools([get_weather])
    result = call(model, mode, [tracing.handler(capture_content=True)])

    assert message_text(result) == "".join(WORDS)
    [request] = server.requests
    sent = request.body
    assert request.path == "/v1/messages"
    assert API_KEY in (request.headers.get("x-api-key"),  # the key was really used
                       request.headers.get("authorization", "").removeprefix("Bearer "))
    span = model_span(tracing)
    a = span.attributes
    assert_common(span, server, "anthropic", "claude-sonnet-4-5")
    assert (sent["temperature"], sent["max_tokens"], sent["top_k"]) == (0.3, 100, 5)
    assert (a[attr.GEN_AI_REQUEST_TEMPERATURE], a[attr.GEN_AI_REQUEST_MAX_TOKENS]) == (0.3, 100)
    assert a[attr.GEN_AI_REQUEST_TOP_K] == 5
    assert_tool_definitions(span, sent["tools"])
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "claude-sonnet-4-5-20250929"
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    # Anthropic's input_tokens leave out cached tokens; the conventions' input count holds them.
    cache_read = ANTHROPIC_USAGE["cache_read_input_tokens"]
    cache_creation = ANTHROPIC_USAGE["cache_creation_input_tokens"]
    # Every langchain-anthropic line, streamed too: 0.3.12 and earlier add up the running
    # totals of message_start and message_delta, which the span does not (stream_usage.py).
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == (ANTHROPIC_USAGE["input_tokens"] + cache_read
                                                 + cache_creation)
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == ANTHROPIC_USAGE["output_tokens"]
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == cache_read
    assert a[attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == cache_creation
    assert tool_calls_of(span) == [{"type": "tool_call", "id": "toolu_01A", "name": "get_weather",
                                    "arguments": {"city": "Paris"}}]
    assert a[attr.GEN_AI_RESPONSE_ID] == ("msg_s1" if streaming else "msg_i1")
    assert_streaming(span, mode, tokens=7, first="One ")  # 5 words + 2 argument pieces
    assert_no_key_exported(tracing)


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_sdk_span_nests_under_the_chat_span(tracing: Any, server: WireServer,
                                                      mode: str) -> None:
    streaming = mode.endswith("stream")
    server.script(anthropic_stream("msg_n1", "claude-x", WORDS) if streaming
                  else anthropic_message("msg_n1", "claude-x", "".join(WORDS)))
    call(anthropic_model(server, tracing), mode, [tracing.handler()])

    chat = model_span(tracing)
    sdk = [s for s in tracing.spans() if s.instrumentation_scope.name.startswith("com.anthropic")]
    assert len(sdk) == 1, [s.name for s in tracing.spans()]
    assert sdk[0].parent is not None and sdk[0].parent.span_id == chat.context.span_id
    assert sdk[0].context.trace_id == chat.context.trace_id
    assert sdk[0].attributes[attr.GEN_AI_RESPONSE_ID] == chat.attributes[attr.GEN_AI_RESPONSE_ID]
    assert chat.start_time <= sdk[0].start_time and sdk[0].end_time <= chat.end_time
    assert_no_key_exported(tracing)


# --- Ollama /api/chat -----------------------------------------------------------------------
def ollama_model(server: WireServer) -> Any:
    langchain_ollama = pytest.importorskip("langchain_ollama")
    return langchain_ollama.ChatOllama(model="llama3.2", base_url=server.url, temperature=0.1,
                                       num_predict=40, top_p=0.8, top_k=7, seed=11)


@pytest.mark.parametrize("mode", MODES)
def test_ollama_chat(tracing: Any, server: WireServer, mode: str) -> None:
    # ChatOllama always asks for a stream (``"stream": true``), invoke included.
    server.script(paused(ollama_stream("llama3.2", WORDS, tool_calls=[WEATHER_CALL])))
    model = ollama_model(server).bind_tools([get_weather])
    result = call(model, mode, [tracing.handler(capture_content=True)])

    assert result.content == "".join(WORDS)
    [request] = server.requests
    sent = request.body
    assert request.path == "/api/chat" and sent["stream"] is True
    span = model_span(tracing)
    a = span.attributes
    assert_common(span, server, "ollama", "llama3.2")
    options = sent["options"]
    assert (a[attr.GEN_AI_REQUEST_TEMPERATURE], options["temperature"]) == (0.1, 0.1)
    assert (a[attr.GEN_AI_REQUEST_MAX_TOKENS], options["num_predict"]) == (40, 40)
    assert (a[attr.GEN_AI_REQUEST_TOP_P], options["top_p"]) == (0.8, 0.8)
    assert (a[attr.GEN_AI_REQUEST_TOP_K], options["top_k"]) == (7, 7)
    assert (a[attr.GEN_AI_REQUEST_SEED], options["seed"]) == (11, 11)
    assert_tool_definitions(span, sent["tools"])
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "llama3.2"
    assert attr.GEN_AI_RESPONSE_ID not in a  # Ollama's chat responses have no id
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)  # done_reason
    assert (a[attr.GEN_AI_USAGE_INPUT_TOKENS], a[attr.GEN_AI_USAGE_OUTPUT_TOKENS]) == (14, 5)
    [tool_call] = tool_calls_of(span)
    # Ollama sends no call id: LangChain makes one, and the span shows the caller's.
    assert tool_call == {"type": "tool_call", "id": result.tool_calls[0]["id"],
                         "name": "get_weather", "arguments": {"city": "Paris"}}
    # Every mode streams here; the tool call arrives whole, its arguments one content chunk.
    span_mode = mode if mode.endswith("stream") else "stream"
    assert_streaming(span, span_mode, tokens=6, first="One ", first_chunk_has_content=True)
    assert_no_key_exported(tracing)


# --- provider errors ------------------------------------------------------------------------
ERROR_CASES = [
    ("openai", 429, "openai.RateLimitError"),
    ("openai", 500, "openai.InternalServerError"),
    ("anthropic", 429, "anthropic.RateLimitError"),
    ("anthropic", 500, "anthropic.InternalServerError"),
    ("ollama", 429, "ollama.ResponseError"),
    ("ollama", 500, "ollama.ResponseError"),
]


def public_class_name(cls: type) -> str:
    """How users import the class: ``ollama.ResponseError``, not ``ollama._types.ResponseError``."""
    return f"{cls.__module__.split('._')[0]}.{cls.__qualname__}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("provider", "status", "sdk_error"), ERROR_CASES)
def test_provider_error_gives_an_error_span_and_reaches_the_caller(
        tracing: Any, server: WireServer, provider: str, status: int, sdk_error: str,
        mode: str) -> None:
    factory = {"openai": openai_model, "anthropic": anthropic_model, "ollama": ollama_model}[provider]
    server.script(error_reply(status, provider))
    recorder = ErrorRecorder()
    with pytest.raises(Exception) as caught:
        call(factory(server), mode, [tracing.handler(), recorder])

    error = caught.value
    module, _, name = sdk_error.rpartition(".")
    # The client's error class (LangChain's integrations re-raise SDK errors as subclasses).
    assert isinstance(error, getattr(__import__(module), name))
    assert len(server.requests) == 1  # the client's own retries are off
    assert recorder.errors and error is recorder.errors[0]  # the same object, untouched
    span = model_span(tracing)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[attr.ERROR_TYPE] == public_class_name(type(error))
    assert span.status.description.startswith(type(error).__name__)
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith(type(error).__name__)
    assert (span.attributes[attr.SERVER_ADDRESS], span.attributes[attr.SERVER_PORT]) == (
        "127.0.0.1", server.port)
    assert_no_key_exported(tracing)


# --- a provider instrumentation beside ours -------------------------------------------------
def metric_points(reader: Any) -> dict[tuple[str, str], int]:
    """(instrumentation scope, metric name) -> number of recorded measurements."""
    counts: dict[tuple[str, str], int] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                counts[(scope.scope.name, metric.name)] = sum(
                    p.count for p in metric.data.data_points)
    return counts


@pytest.mark.parametrize("model_metrics", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_official_openai_instrumentation_nests_and_metrics_are_not_doubled(
        tracing: Any, server: WireServer, mode: str, model_metrics: bool) -> None:
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.provider, meter_provider=meter_provider)
    try:
        streaming = mode.endswith("stream")
        server.script(openai_chat_stream("chatcmpl-o1", "gpt-4o-mini-2024-07-18", WORDS)
                      if streaming else openai_chat("chatcmpl-o1", "gpt-4o-mini-2024-07-18", "hi"))
        handler = tracing.handler(meter_provider=meter_provider, model_metrics=model_metrics)
        call(openai_model(server), mode, [handler])
    finally:
        instrumentor.uninstrument()

    chat = model_span(tracing)
    theirs = [s for s in tracing.spans() if s is not chat]
    assert len(theirs) == 1, [s.name for s in tracing.spans()]
    assert theirs[0].parent is not None and theirs[0].parent.span_id == chat.context.span_id
    assert chat.start_time <= theirs[0].start_time and theirs[0].end_time <= chat.end_time
    assert chat.attributes[attr.GEN_AI_RESPONSE_ID] == theirs[0].attributes[attr.GEN_AI_RESPONSE_ID]

    duration = "gen_ai.client.operation.duration"
    recorded = {scope for (scope, name), count in metric_points(reader).items()
                if name == duration and count}
    assert theirs[0].instrumentation_scope.name in recorded or any(
        s != "otel_callbacks" for s in recorded)  # the provider instrumentation's own
    # With model_metrics=False each call's duration is recorded once, by the provider's side.
    assert ("otel_callbacks" in recorded) is model_metrics
    assert_no_key_exported(tracing)


# --- where the server comes from --------------------------------------------------------------
def test_server_from_the_sdk_clients_resolved_base_url(tracing: Any, server: WireServer,
                                                       monkeypatch: Any) -> None:
    """No base_url given: the openai SDK resolves it (here from OPENAI_BASE_URL)."""
    langchain_openai = pytest.importorskip("langchain_openai")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    server.script(openai_chat("chatcmpl-e1", "gpt-4o-mini", "hi"))
    model = langchain_openai.ChatOpenAI(model="gpt-4o-mini", api_key=API_KEY, max_retries=0)
    model.invoke("hi", config={"callbacks": [tracing.handler()]})
    assert len(server.requests) == 1
    a = model_span(tracing).attributes
    assert (a[attr.SERVER_ADDRESS], a[attr.SERVER_PORT]) == ("127.0.0.1", server.port)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://api.openai.com/v1", {attr.SERVER_ADDRESS: "api.openai.com", attr.SERVER_PORT: 443}),
    ("http://ollama.internal", {attr.SERVER_ADDRESS: "ollama.internal", attr.SERVER_PORT: 80}),
    ("localhost:11434", {attr.SERVER_ADDRESS: "localhost", attr.SERVER_PORT: 11434}),
    ("https://[::1]:8443/x", {attr.SERVER_ADDRESS: "::1", attr.SERVER_PORT: 8443}),
    ("http://host:notaport", {}),
    ("", {}),
])
def test_server_attributes_of_a_base_url(url: str, expected: dict[str, Any]) -> None:
    from otel_callbacks.mapping import server_attributes

    assert dict(server_attributes(url)) == expected


def test_a_provider_stream_outside_a_model_run_is_left_alone(tracing: Any,
                                                             server: WireServer) -> None:
    """The SDK called directly inside a chain: the chain span gets no response id."""
    openai = pytest.importorskip("openai")
    from langchain_core.runnables import RunnableLambda

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)

    def direct(_: Any) -> str:
        stream = client.chat.completions.create(model="m", messages=[], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    server.script(openai_chat_stream("chatcmpl-d1", "m", WORDS))
    assert RunnableLambda(direct).invoke("x", config={"callbacks": [tracing.handler()]}) == "".join(WORDS)
    [chain] = tracing.spans()
    assert attr.GEN_AI_RESPONSE_ID not in chain.attributes


def test_responses_api_incomplete_response_finish_reason(tracing: Any, server: WireServer) -> None:
    reply = responses("resp_x1", "gpt-4o-mini", "One two")
    reply.body.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    server.script(reply)
    openai_model(server, use_responses_api=True).invoke("hi", config={"callbacks": [tracing.handler()]})
    a = model_span(tracing).attributes
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert a[attr.GEN_AI_RESPONSE_ID] == "resp_x1"
