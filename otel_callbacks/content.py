"""What may leave the process: content capture policy, size caps, secret redaction, UTF-8.

Three rules hold everywhere: prompt/output content is exported only when the user opted in,
credentials are never exported (the masking rule, ``masking.py``), and every
string handed to the SDK is encodable as UTF-8 (``utf8_safe``; one lone surrogate would make
the OTLP encoder drop the whole export batch).
Every function here is total: odd input gives a safe, capped value, never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

# The masking rule lives in masking.py; its names are re-exported here, the content policy's home.
from .masking import REDACTED as REDACTED
from .masking import has_credential as has_credential
from .masking import is_secret_key as is_secret_key
from .masking import scrub_secrets as scrub_secrets

logger = logging.getLogger("otel_callbacks")

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
DEFAULT_MAX_LENGTH = 8192
_MAX_DEPTH = 8
_MAX_ITEMS = 100

# Process-wide caches keep only keys up to this size: bounded memory, whatever runs carry.
SMALL_CHARS = 256
_SMALL_ITEMS = 16


def is_small(key: Any) -> bool:
    """True for a cache key that holds at most a few hundred bytes of user data: short
    strings and bytes, 64-bit numbers, types, and short tuples of those."""
    cls = key.__class__
    if cls is str or cls is bytes:
        return len(key) <= SMALL_CHARS
    if cls is tuple:
        return len(key) <= _SMALL_ITEMS and all(is_small(item) for item in key)
    if cls is int:
        return key.bit_length() <= 64
    return cls is float or cls is bool or key is None or isinstance(key, type)
# Lone surrogates: what ``os.fsdecode`` / ``surrogateescape`` make of undecodable bytes, and
# half of a split surrogate pair. UTF-8 cannot encode them; protobuf and JSON encoders refuse.
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def utf8_safe(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it encodes as UTF-8.

    ASCII text (nearly every name and id) costs one C-level flag check.
    """
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def _encodable(text: str) -> bool:
    return text.isascii() or _SURROGATE.search(text) is None


def utf8_safe_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Span, event or metric attributes with every key and string value made ``utf8_safe``.

    The gate before the SDK for attributes made in one place (an end's, an event's, a
    metric's); a span's start attributes are made safe where each is made (``mapping.py``),
    most of them once and cached. Returns ``attributes`` itself when nothing needs repair (for
    ASCII text, nearly all of it, a flag check per string), else a repaired copy in order.
    """
    for key, value in attributes.items():
        if not key.isascii() and not _encodable(key):
            return _repaired(attributes)
        cls = type(value)  # cheaper than value.__class__ (a specialised builtin call)
        if cls is str:
            if not value.isascii() and not _encodable(value):
                return _repaired(attributes)
        elif cls is tuple or cls is list:
            for item in value:
                if type(item) is str and not item.isascii() and not _encodable(item):
                    return _repaired(attributes)
        elif cls is bytes:  # the SDK would drop undecodable bytes: ours become text
            return _repaired(attributes)
    return attributes


def _repaired(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {utf8_safe(key): utf8_safe_value(value) for key, value in attributes.items()}


def utf8_safe_value(value: Any) -> Any:
    """One attribute value as ``utf8_safe_attributes`` leaves it: text repaired in strings and
    sequences (as a tuple), bytes decoded; other values as they are."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, (tuple, list)):
        return tuple(utf8_safe(v) if isinstance(v, str) else v for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def is_secret_value(value: object) -> bool:
    """True for pydantic secrets and strings holding a credential (``masking.has_credential``)."""
    if type(value).__name__ in ("SecretStr", "SecretBytes"):
        return True
    return isinstance(value, str) and has_credential(value)


def truncate(text: str, max_length: int) -> str:
    """Cap ``text`` at ``max_length`` characters, saying how much was cut."""
    if len(text) <= max_length:
        return text
    return f"{text[:max_length]}...[truncated {len(text) - max_length} chars]"


def _safe_text(text: str, max_length: int) -> str:
    """A string value as exported: masked whole if it holds a credential, else capped."""
    return REDACTED if has_credential(text) else truncate(text, max_length)


def safe_repr(value: object, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """``repr`` that never raises and never returns more than ``max_length`` characters."""
    try:
        text = repr(value)
    except Exception:  # an unprintable object must not break tracing
        text = f"<unprintable {type(value).__qualname__}>"
    return truncate(text, max_length)


def sanitize(value: Any, max_length: int = DEFAULT_MAX_LENGTH, _depth: int = 0,
             _seen: set[int] | None = None) -> Any:
    """Turn ``value`` into JSON-able data with secrets masked, cycles cut and sizes capped."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _safe_text(value, max_length)
    if is_secret_value(value):
        return REDACTED
    if _depth >= _MAX_DEPTH:
        return "[max depth]"
    seen = _seen if _seen is not None else set()
    marker = id(value)
    if marker in seen:
        return "[cycle]"
    seen.add(marker)
    try:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= _MAX_ITEMS:
                    out["..."] = f"{len(value) - _MAX_ITEMS} more"
                    break
                name = key if isinstance(key, str) else safe_repr(key, 200)
                out[name] = REDACTED if is_secret_key(name) else sanitize(
                    item, max_length, _depth + 1, seen)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            out_list = [sanitize(item, max_length, _depth + 1, seen) for item in items[:_MAX_ITEMS]]
            if len(items) > _MAX_ITEMS:
                out_list.append(f"... {len(items) - _MAX_ITEMS} more")
            return out_list
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        dump = getattr(value, "model_dump", None)  # pydantic models, LangChain messages
        if callable(dump):
            try:
                return sanitize(dump(), max_length, _depth + 1, seen)
            except Exception:
                pass
        return safe_repr(value, max_length)
    finally:
        seen.discard(marker)


def to_json(value: Any, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """Sanitized JSON text of ``value``, capped at ``max_length``; never raises."""
    if isinstance(value, str):
        return _safe_text(value, max_length)
    try:
        text = json.dumps(sanitize(value, max_length), ensure_ascii=False, default=str)
    except Exception:
        text = safe_repr(value, max_length)
    return truncate(text, max_length)


def scalar_attribute(value: Any, max_length: int = DEFAULT_MAX_LENGTH) -> Any:
    """A value OTel accepts as an attribute (scalar or homogeneous sequence), or None to skip."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _safe_text(value, max_length)
    if is_secret_value(value):
        return REDACTED
    if isinstance(value, (list, tuple)) and value and len(value) <= _MAX_ITEMS:
        if all(isinstance(item, str) for item in value):
            return tuple(scalar_attribute(item, max_length) for item in value)
        first = type(value[0])
        if first in (bool, int, float) and all(type(item) is first for item in value):
            return tuple(value)
    return to_json(value, max_length)


def capture_enabled_from_env() -> bool:
    """The GenAI conventions' opt-in switch for recording message content."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in ("true", "1", "yes", "on")


class ContentPolicy:
    """Decides whether content is recorded and turns it into a safe, capped, redacted string.

    ``redact`` is the user's hook: it sees every content value (already masked and capped)
    and returns the text to export, or None to drop it.
    """

    __slots__ = ("enabled", "max_length", "_redact", "_hook_failed")

    def __init__(self, enabled: bool | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                 redact: Callable[[str], str | None] | None = None) -> None:
        self.enabled = capture_enabled_from_env() if enabled is None else bool(enabled)
        self.max_length = max_length
        self._redact = redact
        self._hook_failed = False

    def render(self, value: Any) -> str | None:
        """The exported text for a content value, or None when nothing may be exported."""
        if not self.enabled:
            return None
        text = to_json(value, self.max_length)
        if self._redact is None:
            return text
        try:
            result = self._redact(text)
        except Exception as exc:  # the hook must not break the app; drop the value instead
            if not self._hook_failed:
                self._hook_failed = True
                logger.warning("otel-callbacks: redact hook raised %r; content dropped", exc)
            return None
        return None if result is None else truncate(str(result), self.max_length)
