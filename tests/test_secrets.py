"""Issue 12 item 4: the one masking rule knows the well-known credential formats, userinfo in
any URL, ``key=value`` pairs and keys whose name holds a secret-ish word; ids, hashes and
ordinary text survive. Identifier keys (``session_id``, ``thread_id``...) are not secrets."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from test_content import exported_strings
from test_genai_conventions import FakeChat, cfg

from otel_callbacks import attributes as attr
from otel_callbacks.content import REDACTED, is_secret_key, is_secret_value, scrub_secrets

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM_BODY = "MIIEowIBAAKCAQEA7bq9Zt0aVd1mZ3nQ\nq2Lx9Zx0k4bQvR8d3nQ9Zx0k4bQvR8d3nQ=="

# (text, the secret part that must not be exported)
POSITIVE = [
    ("postgresql://app:s3cr3tPass@db.internal:5432/orders", "s3cr3tPass"),
    ("mysql+pymysql://root:hunter2@localhost/db", "hunter2"),
    ("redis://:p4ssw0rd@cache:6379/0", "p4ssw0rd"),
    ("amqp://guest:guestpw@rabbit:5672//", "guestpw"),
    ("mongodb+srv://u:pw-1234@cluster0.mongodb.net/?retryWrites=true", "pw-1234"),
    ("clone https://oauth2:abcDEF123xyz@gitlab.example.com/g/r.git now", "abcDEF123xyz"),
    (f"token {JWT} expired", JWT),
    (f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----", PEM_BODY),
    (f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----", PEM_BODY),
    (f"key: -----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}", PEM_BODY),  # cut before END
    (f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{PEM_BODY}\n-----END ENCRYPTED PRIVATE KEY-----",
     PEM_BODY),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("rk_live_51H8abcdefGHIJKLmnop", "51H8abcdefGHIJKLmnop"),
    ("pk_live_51H8abcdefGHIJKLmnop", "51H8abcdefGHIJKLmnop"),
    ("whsec_abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH",
     "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c838347Ae178B4a"),
    ("ghs_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c838347Ae178B4a"),
    ("ghu_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c838347Ae178B4a"),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c838347Ae178B4a"),
    ("glpat-xYz12AbC34dEf56GhI78", "xYz12AbC34dEf56GhI78"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    (f'{{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "SecretAccessKey": "{AWS_SECRET}"}}',
     AWS_SECRET),
    (f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (f"Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,{AWS_SECRET}", AWS_SECRET),
    (f"id AKIAIOSFODNN7EXAMPLE secret {AWS_SECRET} region eu-west-1", AWS_SECRET),
    ("authorization: bearer abc123def456ghi789", "abc123def456ghi789"),
    ("Bearer ya29.a0AfH6SMBx3-abc_def", "ya29.a0AfH6SMBx3-abc_def"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("curl -H 'authorization: basic YWxpY2U6czNjcjN0'", "YWxpY2U6czNjcjN0"),
    ("sk-ant-api03-abcdefghijklmnopqrst", "abcdefghijklmnopqrst"),
    ("sk-proj-Z9y8X7w6V5u4T3s2R1q0", "Z9y8X7w6V5u4T3s2R1q0"),
    ("xoxb-1234567890-abcdefghij", "1234567890-abcdefghij"),
    ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "1234567890abcdefghijklmnopqrstu"),
    ("host=db.internal user=app password=s3cr3t dbname=orders", "s3cr3t"),
    ("pwd=hunter2", "hunter2"),
    ("passphrase: correct-horse-battery", "correct-horse-battery"),
    ("api-key=abc123xyz", "abc123xyz"),
    ("x-api-key: abc123xyz", "abc123xyz"),
    ("apikey=abc123xyz", "abc123xyz"),
    ("client_secret=xyz987abc", "xyz987abc"),
    ("Cookie: sessionid=abc123def", "abc123def"),
    ("Set-Cookie: id=a3fWa; Expires=Wed", "a3fWa"),
    ("private_key=deadbeefcafe", "deadbeefcafe"),
    ("encryption_key: 0x00ff11ee", "0x00ff11ee"),
    ("ssh_key=AAAAB3NzaC1yc2E", "AAAAB3NzaC1yc2E"),
    ('{"password": "hunter2-pw"}', "hunter2-pw"),
    ("DB_PASSWORD=hunter2", "hunter2"),
    ("auth=letmein42", "letmein42"),
    ('{"bearer": "opaque-value"}', "opaque-value"),
    ("otp=492011", "492011"),
    ("credentials: admin:admin123", "admin:admin123"),
]

NEGATIVE = [
    "123e4567-e89b-12d3-a456-426614174000",  # UUID
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # git SHA-1
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256 hex
    "build da39a3ee5e6b4b0d3255bfef95601890afd80709 of AKIA-style docs",  # no key id, a SHA
    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # sha256 base64
    "SGVsbG8sIHdvcmxkISBUaGlzIGlzIG9yZGluYXJ5IGJhc2U2NCB0ZXh0Lg==",  # ordinary base64 text
    "/usr/local/lib/python3.11/site-packages/langchain_core/runnables",  # a path
    "https://example.com:8443/path?q=1&page=2",
    "https://api.example.com/v1/items/42",
    "ssh://git@github.com/org/repo.git",  # a user name alone is not a credential
    "mailto:someone@example.com",
    "someone@example.com",
    "tokenizer: bpe",
    "author: Jane Doe",
    "passage: In the beginning",
    "keyboard=qwerty",
    "max_tokens=256",
    "token_count: 12",
    "monkey: business",
    "session_id=abc-123",
    "thread_id: t-42",
    "The bearer of bad news arrived.",
    "Some basic questions about life",
    "scikit-learn is also called sk-learn",
    "see https://huggingface.co/hf_models",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "Enter your password:",
    "step=3 node=agent",
    "chat gpt-4o-mini",
    "ChatOpenAI",
    "Final Answer: 5",
    "",
]


@pytest.mark.parametrize("text, secret", POSITIVE)
def test_credentials_are_masked(text: str, secret: str) -> None:
    assert is_secret_value(text)
    scrubbed = scrub_secrets(text)
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_text_survives(text: str) -> None:
    assert not is_secret_value(text)
    assert scrub_secrets(text) == text


def test_scrubbing_keeps_the_diagnosis() -> None:
    """In free text only the secret goes: user, host and database stay visible."""
    assert (scrub_secrets("could not connect to postgresql://app:s3cr3t@db:5432/orders")
            == f"could not connect to postgresql://app:{REDACTED}@db:5432/orders")
    assert scrub_secrets("host=db user=app password=s3cr3t") == f"host=db user=app password={REDACTED}"


SECRET_KEYS = ["api_key", "apiKey", "API-KEY", "x-api-key", "apikey", "openai_api_key", "password",
               "db_password", "dbPassword", "passwd", "pwd", "db_pwd", "passphrase", "secret",
               "client_secret", "clientSecret", "aws_secret_access_key", "secret_key",
               "access_token", "refresh_token", "id_token", "auth_token", "csrftoken", "token",
               "auth", "Authorization", "credentials", "credential", "cookie", "set-cookie",
               "Set-Cookie", "private_key", "privateKey", "ssh_key", "encryption_key",
               "signing_key", "signature", "db_pass", "pass", "access_key", "accessKey"]
PLAIN_KEYS = ["author", "authors", "author_id", "tokenizer", "max_tokens", "token_count", "tokens",
              "passage", "passenger", "keyboard", "monkey", "key", "keys", "bypass", "compass",
              "primary_key", "public_key", "key_id", "session_id", "sessionId", "thread_id",
              "conversation_id", "user_id", "userId", "model", "temperature", "secretary"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_identifier_metadata_is_exported_but_credential_values_are_not(tracing: Any) -> None:
    """For issue 13: conversation ids are identifiers, exported as given; a credential-shaped
    value is masked whatever key it is under."""
    handler = tracing.handler()
    metadata = {"session_id": "sess-42", "thread_id": "thread-7", "conversation_id": "conv-1",
                "user_id": "user-9", "sessionId": "sess-43",
                "tenant": "sk-proj-Z9y8X7w6V5u4T3s2R1q0"}
    FakeChat().invoke("hi", config=cfg(handler, metadata=metadata))
    a = tracing.one("chat fake-model-1").attributes
    for key in ("session_id", "thread_id", "conversation_id", "user_id", "sessionId"):
        assert a[attr.RUN_METADATA_PREFIX + key] == metadata[key]
    assert a[attr.RUN_METADATA_PREFIX + "tenant"] == REDACTED
    tracing.exporter.clear()
    FakeChat().invoke("hi", config=cfg(handler, metadata={"session_id": "sk-proj-Z9y8X7w6V5u4T3s2R1q0"}))
    assert tracing.one("chat fake-model-1").attributes[attr.RUN_METADATA_PREFIX + "session_id"] == REDACTED


@pytest.mark.parametrize("capture", [False, True])
def test_dsn_password_in_an_exception_is_not_exported(tracing: Any, capture: bool) -> None:
    class OperationalError(Exception):
        pass

    def connect(x: str) -> str:
        raise OperationalError('connection to "postgresql://app:s3cr3tPw@db:5432/orders" failed; '
                               "dsn host=db user=app password=0th3rPw")

    with pytest.raises(OperationalError):
        RunnableLambda(connect).invoke("x", config=cfg(tracing.handler(capture_content=capture)))
    exported = "\n".join(exported_strings(tracing))
    assert "s3cr3tPw" not in exported and "0th3rPw" not in exported
    (span,) = tracing.spans()
    assert f"postgresql://app:{REDACTED}@db:5432/orders" in span.status.description
    event = next(e for e in span.events if e.name == "exception")
    assert f"password={REDACTED}" in event.attributes["exception.message"]
    assert "s3cr3tPw" not in event.attributes["exception.stacktrace"]


def test_tool_description_is_scrubbed(tracing: Any) -> None:
    def lookup(query: str) -> str:
        return "ok"

    tool = StructuredTool.from_function(
        lookup, name="lookup",
        description="Looks things up at https://svc:pa55w0rd@api.example.com with sk-proj-Z9y8X7w6V5u4T3s2R1q0")
    tool.invoke({"query": "q"}, config=cfg(tracing.handler()))
    description = tracing.one("execute_tool lookup").attributes[attr.GEN_AI_TOOL_DESCRIPTION]
    assert "pa55w0rd" not in description and "Z9y8X7w6V5u4T3s2R1q0" not in description
    assert description.startswith("Looks things up at https://svc:")


def test_the_pair_pre_check_never_hides_a_secret_key() -> None:
    """Every key the key rule calls secret contains a fragment the cheap pre-check looks for."""
    from otel_callbacks import masking

    words = [*masking._SECRET_WORDS, *masking._SECRET_PAIRS, *SECRET_KEYS]
    for word in words:
        assert any(fragment in word.lower() for fragment in masking._KEY_FRAGMENTS), word
