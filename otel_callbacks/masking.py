"""The one masking rule: what counts as a credential, in a key's name and in text.

Three shapes of secret are recognised, wherever a string is exported:
- well-known credential formats (provider API keys, cloud and VCS tokens, JWTs, PEM private
  keys, bearer and basic authorization values);
- the password in a URL's userinfo, in any scheme (``postgresql://user:pass@host``);
- ``key=value`` / ``key: value`` pairs, and keys of structured data, whose key name holds a
  secret-ish word (``password``, ``pwd``, ``api-key``, ``client_secret``, ``cookie``...).
Identifiers (``session_id``, ``thread_id``, ``conversation_id``, ``user_id``) are not secrets,
and neither are ids, hashes, token counts or ordinary base64 text.

Cheap on every exported string: one compiled alternation of the credential formats; the URL
and ``key=value`` scans run only when a ``://``, ``:`` or ``=`` is in the text (a C-level
substring check). A candidate pair's key name decides (the key-name rule, cached); ``Basic``
values are decoded to check they hold ``user:password``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

REDACTED = "[REDACTED]"

# --- key names -------------------------------------------------------------------------------
# A key is split into lower-cased words ("x-api-key", "apiKey", "API_KEY" -> api, key).
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Words that make a key secret on their own.
_SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "auth",
    "authorization", "credential", "credentials", "cookie", "cookies", "signature", "jwt",
    "bearer", "otp",
})
# Two adjacent words that make a key secret ("ssh_key", "encryptionKey").
_SECRET_PAIRS = frozenset({
    "apikey", "privatekey", "accesskey", "secretkey", "sshkey", "encryptionkey", "signingkey",
    "masterkey", "accountkey", "sessionkey", "clientkey", "authkey",
})
# Secret words that may be glued to others with no separator ("dbpassword", "clientsecret").
_SECRET_INSIDE = re.compile(
    r"password|passwd|passphrase|credential|apikey|privatekey|accesskey|secret(?!ar)")
# Conversation and user identifiers: exported as given (a credential-shaped value still is not).
IDENTIFIER_KEYS = frozenset({"sessionid", "threadid", "conversationid", "userid"})
_KEY_CACHE_LIMIT = 4096
_KEY_CACHE_CHARS = 256
_key_cache: dict[str, bool] = {}


def _secret_key(key: str) -> bool:
    words = [word.lower() for word in _WORDS.findall(key)]
    flat = "".join(words)
    if flat in IDENTIFIER_KEYS:
        return False
    # Only the singular ends a secret: token counts (max_tokens, token_count) are not secrets.
    if flat.endswith("token") or _SECRET_INSIDE.search(flat):
        return True
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(a + b in _SECRET_PAIRS for a, b in zip(words, words[1:]))


def is_secret_key(key: object) -> bool:
    """True for keys such as ``api_key``, ``x-api-key``, ``db_password``, ``pwd``,
    ``access_token``, ``client_secret``, ``ssh_key``, ``Set-Cookie``; False for ``author``,
    ``tokenizer``, ``max_tokens``, ``passage``, ``keyboard``, ``session_id``."""
    if not isinstance(key, str):
        return False
    cached = _key_cache.get(key)
    if cached is None:
        cached = _secret_key(key)
        if len(_key_cache) < _KEY_CACHE_LIMIT and len(key) <= _KEY_CACHE_CHARS:
            _key_cache[key] = cached
    return cached


# --- text ------------------------------------------------------------------------------------
# Credential formats, masked wherever they appear. Every branch starts at a word boundary
# with a literal, so the scan is quick; the two shapes below are scanned only when their
# marker ("://", a ":" or "=") is in the text at all.
_TOKENS = re.compile(
    # Provider, cloud and VCS key formats.
    r"\b(?:sk-[A-Za-z0-9_\-]{12,}|[spr]k_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|whsec_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_\-]{20,}|xox[abeoprs]-[A-Za-z0-9\-]{10,}"
    r"|AIza[0-9A-Za-z_\-]{30,}"
    # An AWS access key id, with the secret access key that follows it nearby (a credentials
    # CSV, `aws configure` output): 40 base64 characters of mixed case.
    r"|A[KS]IA[0-9A-Z]{16}\b(?:[^\n]{0,100}?(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]{0,39}[a-z])"
    r"(?=[A-Za-z0-9/+]{0,39}[A-Z])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))?"
    # JSON Web Tokens: two base64url JSON objects and a signature.
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
    # Bearer tokens (any case; a token has a digit, "the bearer of" does not).
    r"|(?i:bearer)\s+(?=[A-Za-z._~+/\-]*[0-9])[\w.~+/\-]{8,}=*"
    # Basic credentials: base64 of user:password (checked by decoding).
    r"|(?i:basic)\s+(?P<basic>[A-Za-z0-9+/]{6,}={0,2})(?![\w+/=]))"
    # PEM private keys, to their END line (or to the end of a text cut before it).
    r"|-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)"
)
# The password of a URL's userinfo, any scheme: scheme://user:password@host.
_USERINFO = re.compile(r"(?P<head>://[^\s/?#@:]{0,256}:)(?!\[REDACTED\]@)[^\s/?#]{1,256}@")
# key=value / key: value / "key": "value" pairs; the key's name decides (is_secret_key).
# ASCII classes: with \w, backtracking over each word costs ten times as much.
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z0-9_.\-]{1,80})(?P<sep>[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<value>(?!\[REDACTED\])(?:(?i:basic|bearer|digest|token)[ \t]+)?[^\s\"',;&]+)"
)


def _is_basic_credential(value: str) -> bool:
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in raw and all(32 <= byte < 127 for byte in raw)


def _mask_token(match: re.Match[str]) -> str:
    basic = match["basic"]
    if basic is not None and not _is_basic_credential(basic):
        return match[0]
    return REDACTED


def _mask_userinfo(match: re.Match[str]) -> str:
    return match["head"] + REDACTED + "@"


def _mask_pair(match: re.Match[str]) -> str:
    head = match["key"] + match["sep"]
    if is_secret_key(match["key"]):
        return head + REDACTED
    value = match["value"]  # "keyboard: password=x"
    return head + (_PAIR.sub(_mask_pair, value) if "=" in value or ":" in value else value)


def _has_pair(text: str) -> bool:
    for match in _PAIR.finditer(text):
        if is_secret_key(match["key"]):
            return True
        value = match["value"]  # "keyboard: password=x"
        if ("=" in value or ":" in value) and _has_pair(value):
            return True
    return False


# A pair can only name a secret if one of these is in the text (case folded): every word the
# key rule accepts contains one.
_KEY_FRAGMENTS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "cookie",
                  "signature", "jwt", "otp", "bearer")


def _may_hold_pair(text: str) -> bool:
    """Cheap pre-check (C-level substring searches) before the pair scan."""
    if "=" not in text and ":" not in text:
        return False
    folded = text.lower()
    return any(fragment in folded for fragment in _KEY_FRAGMENTS)


def has_credential(text: str) -> bool:
    """True when ``text`` holds a credential anywhere (see the module docstring)."""
    for match in _TOKENS.finditer(text):
        basic = match["basic"]
        if basic is None or _is_basic_credential(basic):
            return True
    if "://" in text and _USERINFO.search(text) is not None:
        return True
    return _may_hold_pair(text) and _has_pair(text)


def scrub_secrets(text: Any) -> Any:
    """``text`` with every credential replaced by ``[REDACTED]`` (a URL keeps its user and
    host, a pair its key): for free text such as error messages and stack traces, where
    dropping the whole value would lose the diagnosis. Non-strings are returned as they are."""
    if not isinstance(text, str):
        return text
    text = _TOKENS.sub(_mask_token, text)
    if "://" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    if _may_hold_pair(text):
        text = _PAIR.sub(_mask_pair, text)
    return text
