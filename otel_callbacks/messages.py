"""LangChain messages -> the GenAI conventions' structured message form (pure functions).

Used only when content capture is on. Duck-typed so it needs no LangChain import and
tolerates dicts, strings and odd objects.
"""

from __future__ import annotations

from typing import Any

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "AIMessageChunk": "assistant", "system": "system", "tool": "tool",
          "function": "tool", "developer": "system"}


_REASONING_BLOCKS = {"reasoning": "reasoning", "thinking": "thinking"}
_TOOL_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call"})


def _parts(content: Any, has_tool_calls: bool = False) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append({"type": "text", "content": block.get("text", "")})
            elif isinstance(block, dict) and block.get("type") in _REASONING_BLOCKS:
                # LangChain v1 "reasoning" / Anthropic "thinking" blocks -> ReasoningPart.
                text = block.get(_REASONING_BLOCKS[block["type"]])
                parts.append({"type": "reasoning", "content": text if isinstance(text, str) else ""})
            elif isinstance(block, dict) and block.get("type") in _TOOL_CALL_BLOCKS and has_tool_calls:
                continue  # the message's tool_calls become tool_call parts below; no duplicates
            elif isinstance(block, dict):
                parts.append({"type": str(block.get("type", "unknown")), "content": block})
            else:
                parts.append({"type": "unknown", "content": block})
        return parts
    return [{"type": "text", "content": content}]


def message_role(message: Any) -> str:
    kind = getattr(message, "type", None)
    if kind is None and isinstance(message, dict):
        kind = message.get("role") or message.get("type")
    if kind == "chat":
        kind = getattr(message, "role", "user")
    return _ROLES.get(str(kind), str(kind or "user"))


def to_genai_message(message: Any, finish_reason: str | None = None) -> dict[str, Any]:
    """One message as ``{"role", "parts"[, "finish_reason"]}``.

    A bare string is a prompt (role ``user``); callers turning a completion's text into an
    output message set the role themselves.
    """
    if isinstance(message, str):
        out: dict[str, Any] = {"role": "user", "parts": _parts(message)}
    else:
        is_dict = isinstance(message, dict)
        content = message.get("content") if is_dict else getattr(message, "content", None)
        tool_calls = message.get("tool_calls") if is_dict else getattr(message, "tool_calls", None)
        out = {"role": message_role(message), "parts": _parts(content, bool(tool_calls))}
        for call in tool_calls or ():
            if isinstance(call, dict):
                out["parts"].append({"type": "tool_call", "id": call.get("id"),
                                     "name": call.get("name"), "arguments": call.get("args")})
        tool_call_id = message.get("tool_call_id") if is_dict else getattr(message, "tool_call_id", None)
        if tool_call_id is not None:
            out["parts"] = [{"type": "tool_call_response", "id": tool_call_id, "response": content}]
    if finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out


def split_system(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instruction parts, the other messages) in GenAI form."""
    system: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for message in messages:
        converted = to_genai_message(message)
        if converted["role"] == "system":
            system.extend(converted["parts"])
        else:
            rest.append(converted)
    return system, rest
