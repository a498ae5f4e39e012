"""Local HTTP servers speaking the providers' wire formats, for the real client packages.

Each server listens on 127.0.0.1 (a free port), answers every POST with the next scripted
``Reply`` and records each request (path, headers, JSON body), so a test can check what the
client really sent next to what the span says. The reply bodies follow the providers' public API
references: OpenAI Chat Completions and Responses, Anthropic Messages, Ollama ``/api/chat``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One HTTP answer: a JSON body, or a stream of pre-framed chunks (SSE or NDJSON)."""

    body: Any = None
    chunks: list[bytes] | None = None
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    pause_after_first: float = 0.0  # seconds between the first chunk and the rest


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


class WireServer:
    """A ThreadingHTTPServer on a free loopback port, answering scripted replies in order."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with owner._lock:
                    owner.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = owner.replies.pop(0) if owner.replies else Reply(
                        {"error": {"message": "no reply scripted"}}, status=500)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                # One request per connection: the clients' pools then never hold a connection
                # bound to an event loop a previous test closed.
                self.close_connection = True
                reply.headers.setdefault("Connection", "close")
                if reply.chunks is None:
                    data = json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                for index, chunk in enumerate(reply.chunks):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    if index == 0 and reply.pause_after_first:
                        time.sleep(reply.pause_after_first)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)
            self.requests = []

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- framing ------------------------------------------------------------------------------------
def sse(events: Iterable[Any], *, named: bool = False, done: bool = False) -> Reply:
    """Server-sent events; ``named`` adds the ``event:`` line (Anthropic, Responses API)."""
    chunks = []
    for event in events:
        head = f"event: {event['type']}\n".encode() if named else b""
        chunks.append(head + b"data: " + json.dumps(event).encode() + b"\n\n")
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return Reply(chunks=chunks, content_type="text/event-stream")


def ndjson(objects: Iterable[Any]) -> Reply:
    return Reply(chunks=[json.dumps(o).encode() + b"\n" for o in objects],
                 content_type="application/x-ndjson")


def error_reply(status: int, provider: str) -> Reply:
    """An API error body in the provider's own shape."""
    if provider == "anthropic":
        kind = "rate_limit_error" if status == 429 else "api_error"
        return Reply({"type": "error", "error": {"type": kind, "message": f"HTTP {status} from test"}},
                     status=status)
    if provider == "ollama":
        return Reply({"error": f"HTTP {status} from test"}, status=status)
    code = "rate_limit_exceeded" if status == 429 else "server_error"
    return Reply({"error": {"message": f"HTTP {status} from test", "type": code, "param": None,
                            "code": code}}, status=status)


# --- OpenAI Chat Completions ----------------------------------------------------------------
OPENAI_USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26,
                "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}


def openai_tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def openai_chat(response_id: str, model: str, text: str | None,
                tool_calls: list[dict[str, Any]] | None = None) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply({
        "id": response_id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "system_fingerprint": "fp_test", "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": OPENAI_USAGE})


def openai_chat_stream(response_id: str, model: str, words: list[str],
                       tool_calls: list[dict[str, Any]] | None = None) -> Reply:
    """The role-only opening chunk, one chunk per word (or per tool-call argument piece), the
    finish chunk, then the usage-only chunk ``stream_options.include_usage`` asks for."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": response_id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "system_fingerprint": "fp_test",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": w}) for w in words]
    for i, call in enumerate(tool_calls or ()):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        events.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"],
                                                          "arguments": ""}}]}))
        for piece in (arguments[:half], arguments[half:]):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(chunk({}, "tool_calls" if tool_calls else "stop"))
    events.append({"id": response_id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": model, "system_fingerprint": "fp_test", "choices": [],
                   "usage": OPENAI_USAGE})
    return sse(events, done=True)


# --- OpenAI Responses API -------------------------------------------------------------------
RESPONSES_USAGE = {"input_tokens": 21, "input_tokens_details": {"cached_tokens": 16},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2},
                   "total_tokens": 26}


def _response_object(response_id: str, model: str, output: list[Any], status: str,
                     usage: Any) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "created_at": 1_700_000_000, "status": status,
            "error": None, "incomplete_details": None, "instructions": None,
            "max_output_tokens": None, "model": model, "output": output,
            "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


def _responses_message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _responses_call(item_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"],
            "status": "completed"}


def responses(response_id: str, model: str, text: str,
              tool_calls: list[dict[str, Any]] | None = None) -> Reply:
    output = [_responses_message("msg_1", text)] if text else []
    output += [_responses_call(f"fc_{i}", c) for i, c in enumerate(tool_calls or ())]
    return Reply(_response_object(response_id, model, output, "completed", RESPONSES_USAGE))


def responses_stream(response_id: str, model: str, words: list[str],
                     tool_calls: list[dict[str, Any]] | None = None) -> Reply:
    """response.created / in_progress, the message item and its text part, one
    ``response.output_text.delta`` per word, the done events; per tool call a function_call
    item with its arguments in two ``response.function_call_arguments.delta`` events; then
    response.completed with the whole output and the usage."""
    text = "".join(words)
    seq = iter(range(1000))
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": next(seq),
         "response": _response_object(response_id, model, [], "in_progress", None)},
        {"type": "response.in_progress", "sequence_number": next(seq),
         "response": _response_object(response_id, model, [], "in_progress", None)},
        {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
         "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
                  "content": []}},
        {"type": "response.content_part.added", "sequence_number": next(seq), "item_id": "msg_1",
         "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
    ]
    events += [{"type": "response.output_text.delta", "sequence_number": next(seq),
                "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": w,
                "logprobs": []} for w in words]
    events += [
        {"type": "response.output_text.done", "sequence_number": next(seq), "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "sequence_number": next(seq), "item_id": "msg_1",
         "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": text, "annotations": []}},
        {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0,
         "item": _responses_message("msg_1", text)},
    ]
    output = [_responses_message("msg_1", text)]
    for i, call in enumerate(tool_calls or (), start=1):
        item = _responses_call(f"fc_{i}", call)
        arguments = item["arguments"]
        half = len(arguments) // 2
        events.append({"type": "response.output_item.added", "sequence_number": next(seq),
                       "output_index": i,
                       "item": {**item, "arguments": "", "status": "in_progress"}})
        events += [{"type": "response.function_call_arguments.delta", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": i, "delta": piece}
                   for piece in (arguments[:half], arguments[half:])]
        events += [
            {"type": "response.function_call_arguments.done", "sequence_number": next(seq),
             "item_id": item["id"], "output_index": i, "arguments": arguments},
            {"type": "response.output_item.done", "sequence_number": next(seq),
             "output_index": i, "item": item},
        ]
        output.append(item)
    events.append({"type": "response.completed", "sequence_number": next(seq),
                   "response": _response_object(response_id, model, output, "completed",
                                                RESPONSES_USAGE)})
    return sse(events, named=True)


# --- Anthropic Messages ---------------------------------------------------------------------
ANTHROPIC_USAGE = {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 7,
                   "cache_read_input_tokens": 30}


def anthropic_message(message_id: str, model: str, text: str,
                      tool_uses: list[dict[str, Any]] | None = None) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": t["id"], "name": t["name"], "input": t["input"]}
                for t in tool_uses or ()]
    return Reply({"id": message_id, "type": "message", "role": "assistant", "model": model,
                  "content": content, "stop_reason": "tool_use" if tool_uses else "end_turn",
                  "stop_sequence": None, "usage": ANTHROPIC_USAGE})


def anthropic_stream(message_id: str, model: str, words: list[str],
                     tool_uses: list[dict[str, Any]] | None = None) -> Reply:
    """message_start (input usage), a ping, per block content_block_start / *_delta /
    content_block_stop, message_delta (stop reason, output usage), message_stop."""
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}},
        {"type": "ping"}]
    index = 0
    if words:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}})
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": w}} for w in words]
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    for tool in tool_uses or ():
        arguments = json.dumps(tool["input"])
        half = len(arguments) // 2
        events.append({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}})
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}
                   for piece in (arguments[:half], arguments[half:])]
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": "tool_use" if tool_uses else "end_turn",
                             "stop_sequence": None},
                   "usage": ANTHROPIC_USAGE})  # cumulative: input, cache and output tokens
    events.append({"type": "message_stop"})
    return sse(events, named=True)


# --- Ollama /api/chat -----------------------------------------------------------------------
def _ollama_final(model: str, reason: str) -> dict[str, Any]:
    return {"model": model, "created_at": "2025-01-01T00:00:01Z", "done": True,
            "done_reason": reason, "total_duration": 120_000_000, "load_duration": 1_000_000,
            "prompt_eval_count": 14, "prompt_eval_duration": 10_000_000, "eval_count": 5,
            "eval_duration": 90_000_000}


def ollama_chat(model: str, text: str, tool_calls: list[dict[str, Any]] | None = None,
                reason: str = "stop") -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [{"function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in tool_calls]
    return Reply({**_ollama_final(model, reason), "message": message})


def ollama_stream(model: str, words: list[str], tool_calls: list[dict[str, Any]] | None = None,
                  reason: str = "stop") -> Reply:
    """One object per word (done false), a whole tool call in one object, then the final object
    with done_reason and the token counts."""
    def line(message: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": "", **message}, "done": False}

    lines = [line({"content": w}) for w in words]
    if tool_calls:
        lines.append(line({"tool_calls": [
            {"function": {"name": c["name"], "arguments": c["arguments"]}} for c in tool_calls]}))
    final = {**_ollama_final(model, reason), "message": {"role": "assistant", "content": ""}}
    return ndjson([*lines, final])
