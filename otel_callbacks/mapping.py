"""Pure functions from callback arguments to span names, kinds and attributes.

No I/O, no OTel calls, no content: what may be recorded regardless of the capture opt-in
(model names, parameters, usage counts, tool names). Content lives in ``content.py``.

The run names and start attributes made here (``run_name``, ``common_attributes``,
``chain_span``, ``model_span``, ``tool_span``) are already UTF-8-safe (``content.utf8_safe``),
and the caches keep the safe form: the handler hands them to the SDK unchecked. What an end
or an event adds goes through ``content.utf8_safe_attributes`` in the handler.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sys
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from opentelemetry.trace import SpanKind

from . import attributes as attr
from .content import (
    is_secret_key,
    is_small,
    scalar_attribute,
    scrub_secrets,
    utf8_safe,
    utf8_safe_attributes,
    utf8_safe_value,
)

# LangChain's ls_provider values -> gen_ai.provider.name well-known values.
_PROVIDERS = {
    "openai": "openai", "azure": "azure.ai.openai", "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic", "google_genai": "gcp.gemini", "google_vertexai": "gcp.vertex_ai",
    "google_anthropic_vertex": "gcp.vertex_ai", "amazon_bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock", "bedrock_converse": "aws.bedrock", "cohere": "cohere",
    "mistralai": "mistral_ai", "mistral": "mistral_ai", "groq": "groq", "deepseek": "deepseek",
    "xai": "x_ai", "perplexity": "perplexity", "ibm": "ibm.watsonx.ai",
    "azure_ai": "azure.ai.inference",
}
_AGENT_NAME = re.compile(r"agent", re.IGNORECASE)
_MAX_ATTR = 1024
_ABSENT = object()
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Message ids LangChain makes up when the provider gave none (1.x: "lc_run-...", 0.3: "run-...").
_LANGCHAIN_MESSAGE_IDS = ("lc_run-", "run-")


def serialized_name(serialized: Any) -> str | None:
    """The class name LangChain serialized (``id``'s last element) or its ``name``."""
    if serialized.__class__ is not dict and not isinstance(serialized, Mapping):
        return None
    name = serialized.get("name")
    if isinstance(name, str) and name:
        return name
    ident = serialized.get("id")
    if isinstance(ident, (list, tuple)) and ident and isinstance(ident[-1], str):
        return ident[-1]
    return None


def run_name(serialized: Any, name: Any, default: str) -> str:
    """The run's own name: LangChain's ``name`` kwarg (run_name / get_name()) first, else the
    serialized name (None: already read into ``default``), else ``default``. UTF-8-safe, like
    every start attribute this module makes."""
    if not (isinstance(name, str) and name):
        name = (serialized_name(serialized) if serialized is not None else None) or default
    return name if name.isascii() else utf8_safe(name)


_CACHE_LIMIT = 8192
# Tags and metadata repeat across runs (LangGraph sends the same keys and values for every node
# run), so their converted attribute form is cached: conversion costs more than the SDK span.
# Only small keys are kept (``is_small``): a cache must not keep a finished run's data alive.
_tags_cache: dict[tuple[Any, ...], Any] = {}
_metadata_cache: dict[tuple[Any, ...], tuple[str, Any] | None] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """Cache ``value`` under ``key`` if the key is small; returns ``value`` either way.

    Checked on a miss only, so hits cost nothing more. What repeats (node names, step numbers,
    model names, short tags) is small; a large or unique value gains little from caching.
    """
    if is_small(key):
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
    return value


def _tags_attribute(tags: Any) -> Any:
    """The user's tags; LangChain's positional ones (``seq:step:2``) only repeat the tree."""
    own = [t for t in tags if not (isinstance(t, str) and t.startswith(_STEP_TAG_PREFIXES))]
    return utf8_safe_value(scalar_attribute(own, _MAX_ATTR)) if own else None


def _metadata_attribute(key: Any, value: Any) -> tuple[str, Any] | None:
    if not isinstance(key, str) or key.startswith("ls_"):
        return None  # ls_* keys become GenAI attributes on model spans
    name = utf8_safe(attr.RUN_METADATA_PREFIX + key)
    if is_secret_key(key):
        return name, "[REDACTED]"
    converted = scalar_attribute(value, _MAX_ATTR)
    return None if converted is None else (name, utf8_safe_value(converted))


# Metadata LangChain and LangGraph add for their own bookkeeping: LangGraph's routing (the span
# tree already shows the path; a task id per step) and langchain-core's ``lc_versions`` (the same
# dict on every model run). They would only add per-span cost and backend storage.
# ``langgraph_step`` and ``langgraph_node`` are kept.
_PLUMBING_METADATA = frozenset({"langgraph_triggers", "langgraph_path", "langgraph_checkpoint_ns",
                                "checkpoint_ns", "lc_versions"})
# Keys skipped before any conversion: the plumbing, and the ``ls_*`` keys langchain-core sets on
# every model run (they become GenAI attributes). Other ``ls_*`` keys are skipped when converted.
_SKIPPED_METADATA = _PLUMBING_METADATA | {
    "ls_provider", "ls_model_name", "ls_model_type", "ls_temperature", "ls_max_tokens", "ls_stop",
    "ls_integration"}


def common_attributes(run_id: Any, run_type: str, tags: Any, metadata: Any) -> dict[str, Any]:
    """Attributes every span carries: run id/type, the user's tags, the user's metadata
    (not ``ls_*``, which become GenAI attributes, nor LangGraph's routing keys)."""
    if run_id.__class__ is UUID:  # UUID.__str__, inline: a frame less per run; ASCII
        # ``bytes.hex`` rather than ``"%032x" %``: the same speed alone, but the printf-style
        # formatting is C code nothing else between two runs executes, so in the workload it
        # cost about 700 more instruction-cache misses per prompt | chat | parser (callgrind).
        # In 2-byte groups ("xxxx-xxxx-...-xxxx"), then the 8-4-4-4-12 layout: 4 slices, not 5.
        grouped = run_id.int.to_bytes(16, "big").hex("-", 2)
        run_id_text = f"{grouped[:4]}{grouped[5:29]}{grouped[30:34]}{grouped[35:]}"
    else:  # an odd run id's text may not be ASCII
        run_id_text = utf8_safe(str(run_id))
    attrs: dict[str, Any] = {attr.RUN_ID: run_id_text, attr.RUN_TYPE: run_type}
    if tags:
        try:
            key = tuple(tags)
            value = _tags_cache.get(key, _ABSENT)  # one hash of the tuple, hit or miss
            if value is _ABSENT:
                value = _remember(_tags_cache, key, _tags_attribute(key))
        except TypeError:  # unhashable tags: convert without caching
            value = _tags_attribute(tags)
        if value is not None:
            attrs[attr.RUN_TAGS] = value
    if metadata and (metadata.__class__ is dict or isinstance(metadata, Mapping)):
        for key, value in metadata.items():
            if key in _SKIPPED_METADATA:
                continue
            try:
                cache_key = (key, type(value), value)
                item: Any = _metadata_cache.get(cache_key, _ABSENT)
                if item is _ABSENT:
                    item = _remember(_metadata_cache, cache_key, _metadata_attribute(key, value))
            except TypeError:  # unhashable value (dict, list): convert every time
                item = _metadata_attribute(key, value)
            if item is not None:
                attrs[item[0]] = item[1]
    return attrs


# Tags LangChain/LangGraph add to a run that is one step of an enclosing runnable.
_STEP_TAG_PREFIXES = ("seq:step:", "graph:step:", "map:key:", "branch:", "condition:")
_AGENT_NAME_KEYS = ("lc_agent_name", "agent_name")


def _is_nested_step(tags: Any, metadata: Mapping[str, Any]) -> bool:
    if "langgraph_node" in metadata:
        return True
    return any(isinstance(t, str) and t.startswith(_STEP_TAG_PREFIXES) for t in tags or ())


def agent_name(name: str, tags: Any, metadata: Any) -> str | None:
    """The agent's name when this chain run is an agent, else None.

    Tags and metadata are inherited by every child run, so an ``agent`` tag or agent metadata
    marks only the run it was given to: the one that is not itself a step of an enclosing
    runnable (or whose name is the agent name in ``lc_agent_name`` / ``agent_name``, as
    LangChain's ``create_agent`` sets for each agent and subagent graph). A run *named* like
    an agent (``research_agent``, ``AgentExecutor``) is one wherever it is.
    """
    meta = metadata if metadata.__class__ is dict or isinstance(metadata, Mapping) else None
    if meta and (meta.get("lc_agent_name") or meta.get("agent_name") or meta.get("ls_agent_type")):
        named = [v for v in (meta.get(k) for k in _AGENT_NAME_KEYS) if isinstance(v, str) and v]
        if name in named:
            return name
        if not _is_nested_step(tags, meta):
            return named[0] if named else name
    elif tags and "agent" in tags and not _is_nested_step(tags, meta or {}):
        return name
    return name if _named_like_agent(name) else None


_agent_name_cache: dict[str, bool] = {}


def _named_like_agent(name: str) -> bool:
    hit = _agent_name_cache.get(name)
    if hit is None:
        hit = _remember(_agent_name_cache, name, _AGENT_NAME.search(name) is not None)
    return hit


_AGENT_METADATA = frozenset(("lc_agent_name", "agent_name", "ls_agent_type"))
_plain_chain_spans: dict[str, tuple[str, dict[str, Any]]] = {}


def chain_span(name: str, tags: Any, metadata: Any) -> tuple[str, dict[str, Any]]:
    """Chain runs keep their own name unless they are agents.

    Most chain runs carry no agent tag or metadata: then only the name decides, once per name.
    The returned dict is shared: read it, do not change it."""
    if ((not metadata or (metadata.__class__ is dict and _AGENT_METADATA.isdisjoint(metadata)))
            and not (tags and "agent" in tags)):
        found = _plain_chain_spans.get(name)
        if found is None:
            found = _remember(_plain_chain_spans, name,
                              _chain_span(name, name if _named_like_agent(name) else None))
        return found
    return _chain_span(name, agent_name(name, tags, metadata))


def _chain_span(name: str, agent: str | None) -> tuple[str, dict[str, Any]]:
    if agent is not None:
        agent = utf8_safe(agent)
        return f"{attr.OP_INVOKE_AGENT} {agent}", {
            attr.GEN_AI_OPERATION_NAME: attr.OP_INVOKE_AGENT, attr.GEN_AI_AGENT_NAME: agent}
    return name, {}


def _provider_from_class(class_name: str) -> str:
    """LangChain's own default: ``ChatAcme`` / ``AcmeChat`` / ``AcmeLLM`` -> ``acme``."""
    if class_name.startswith("Chat"):
        class_name = class_name[4:]
    elif class_name.endswith("Chat"):
        class_name = class_name[:-4]
    return class_name.removesuffix("LLM").lower() or class_name.lower()


def provider_name(metadata: Any, serialized: Any) -> str | None:
    """``ls_provider`` mapped to the conventions' well-known values, else from the class."""
    provider = (metadata.get("ls_provider")
                if metadata.__class__ is dict or isinstance(metadata, Mapping) else None)
    if isinstance(provider, str) and provider:
        return _PROVIDERS.get(provider.lower(), provider.lower())
    if serialized.__class__ is dict or isinstance(serialized, Mapping):
        ident = serialized.get("id")
        if isinstance(ident, (list, tuple)) and ident and all(isinstance(i, str) for i in ident):
            # Serializable integrations: ["langchain", "chat_models", "openai", "ChatOpenAI"].
            # Others ("not_implemented") give their module path, which names no provider.
            if serialized.get("type") == "constructor" and len(ident) >= 2 and ident[0] == "langchain":
                return _PROVIDERS.get(ident[-2].lower(), ident[-2].lower())
            derived = _provider_from_class(ident[-1])
            return _PROVIDERS.get(derived, derived) if derived else None
    return None


def model_span(run_type: str, serialized: Any, metadata: Any, kwargs: Mapping[str, Any],
               class_name: Any = _ABSENT) -> tuple[str, SpanKind, dict[str, Any]]:
    """Name, kind and request attributes for an llm / chat model run (``class_name``: what
    ``serialized_name`` reads, when the caller has it already)."""
    operation = attr.OP_CHAT if run_type == attr.CHAT_MODEL else attr.OP_TEXT_COMPLETION
    meta = metadata if metadata.__class__ is dict or isinstance(metadata, Mapping) else {}
    params = kwargs.get("invocation_params")
    params = params if params.__class__ is dict or isinstance(params, Mapping) else {}
    model = (meta.get("ls_model_name") or params.get("model") or params.get("model_name")
             or params.get("model_id"))
    attrs: dict[str, Any] = {attr.GEN_AI_OPERATION_NAME: operation}
    # Text values are made UTF-8-safe one by one: the rest are numbers and flags.
    provider = provider_name(meta, serialized)
    if provider:
        attrs[attr.GEN_AI_PROVIDER_NAME] = utf8_safe(provider)
    if isinstance(model, str) and model:
        attrs[attr.GEN_AI_REQUEST_MODEL] = utf8_safe(model)
    _float(attrs, attr.GEN_AI_REQUEST_TEMPERATURE, meta.get("ls_temperature"))
    _int(attrs, attr.GEN_AI_REQUEST_MAX_TOKENS, meta.get("ls_max_tokens"))
    request_parameters(attrs, params)
    stop = meta.get("ls_stop") or params.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, (list, tuple)) and stop and all(isinstance(s, str) for s in stop):
        attrs[attr.GEN_AI_REQUEST_STOP_SEQUENCES] = utf8_safe_value(tuple(stop))
    if params.get("stream") is True:
        attrs[attr.GEN_AI_REQUEST_STREAM] = True
    tools = params.get("tools")
    if tools:
        attrs[attr.GEN_AI_TOOL_DEFINITIONS] = utf8_safe_value(
            scalar_attribute(_tool_definitions(tools), 4 * _MAX_ATTR))
    if not (isinstance(model, str) and model):
        model = None
        if class_name is _ABSENT:
            class_name = serialized_name(serialized)
    label = model or class_name or run_type
    return f"{operation} {label}", SpanKind.CLIENT, attrs


# Request parameters -> the client field or invocation parameter names that hold them (OpenAI,
# Anthropic, Ollama's ``num_predict``, Gemini-style ``max_output_tokens``), first found wins.
_REQUEST_PARAMETERS: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    (attr.GEN_AI_REQUEST_TEMPERATURE, float, ("temperature",)),
    (attr.GEN_AI_REQUEST_MAX_TOKENS, int,
     ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict")),
    (attr.GEN_AI_REQUEST_TOP_P, float, ("top_p",)),
    (attr.GEN_AI_REQUEST_TOP_K, float, ("top_k",)),
    (attr.GEN_AI_REQUEST_FREQUENCY_PENALTY, float, ("frequency_penalty",)),
    (attr.GEN_AI_REQUEST_PRESENCE_PENALTY, float, ("presence_penalty",)),
    (attr.GEN_AI_REQUEST_SEED, int, ("seed",)),
)


def _number(kind: Any, value: Any) -> Any:
    """``value`` as the attribute's type (int or float), or None if it is not such a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or isinstance(value, int):
            return kind(value)
    return None


_REQUEST_PARAMETER_NAMES = frozenset(n for _, _, names in _REQUEST_PARAMETERS for n in names)


def request_parameters(attrs: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the request parameters ``attrs`` lacks from ``params`` (invocation params)."""
    if _REQUEST_PARAMETER_NAMES.isdisjoint(params):  # one C-level pass: most runs set few
        return attrs
    get = params.get
    for key, kind, names in _REQUEST_PARAMETERS:
        if key not in attrs:
            for name in names:
                value = _number(kind, get(name))
                if value is not None:
                    attrs[key] = value
                    break
    return attrs


# A model's configured endpoint (LangChain integrations' field names), else its SDK client's
# resolved ``base_url`` (which includes the SDK's default and environment variables).
_URL_FIELDS = ("openai_api_base", "anthropic_api_url", "azure_endpoint", "base_url", "api_base",
               "endpoint_url")
_CLIENT_FIELDS = ("root_client", "_client", "client")
_DEFAULT_PORTS = {"https": 443, "http": 80}
_ModelFields = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, Any, str], ...]]
# Per model class: which of the names above it has. A missing attribute on a pydantic model
# costs microseconds (its __getattr__ builds an error), so only present ones are read.
_class_fields: dict[type, _ModelFields] = {}


def _fields_of(cls: type) -> _ModelFields:
    fields = _class_fields.get(cls)
    if fields is None:
        declared = getattr(cls, "model_fields", None)
        private = getattr(cls, "__private_attributes__", None) or {}

        def present(name: str) -> bool:  # pydantic: declared fields, private attrs, properties
            return not isinstance(declared, Mapping) or (
                name in declared or name in private or hasattr(cls, name))

        fields = (tuple(n for n in _URL_FIELDS if present(n)),
                  tuple(n for n in _CLIENT_FIELDS if present(n)),
                  tuple((key, kind, n) for key, kind, names in _REQUEST_PARAMETERS
                        for n in names if present(n)))
        if len(_class_fields) < _CACHE_LIMIT:
            _class_fields[cls] = fields
    return fields


def _base_url(model: Any, url_fields: tuple[str, ...], client_fields: tuple[str, ...]) -> str | None:
    for name in url_fields:
        value = getattr(model, name, None)
        if isinstance(value, str) and value:
            return value
    for name in client_fields:
        client = getattr(model, name, None)
        if client is None:
            continue
        try:
            return _client_urls[client]
        except (KeyError, TypeError):  # not seen yet, or not weak-referenceable
            pass
        for candidate in (client, getattr(client, "_client", None)):  # e.g. ollama.Client's httpx
            url = getattr(candidate, "base_url", None)
            if url is not None and not callable(url):
                text = str(url)  # SDK URL objects render in microseconds: once per client
                try:
                    _client_urls[client] = text
                except TypeError:
                    pass
                return text
    return None


# An SDK client's base URL is fixed when it is made; models reuse their client across calls.
_client_urls: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=256)
def server_attributes(url: str) -> tuple[tuple[str, Any], ...]:
    """``server.address`` / ``server.port`` of a base URL (scheme default port when absent)."""
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return ()
    if not host:
        return ()
    port = port or _DEFAULT_PORTS.get(parts.scheme.lower())
    return ((attr.SERVER_ADDRESS, host),) + (((attr.SERVER_PORT, port),) if port else ())


def model_instance_attributes(model: Any) -> dict[str, Any]:
    """What the model object knows and its callbacks do not say: the server it calls and
    request parameters some integrations keep out of their invocation params (ChatOllama)."""
    url_fields, client_fields, parameters = _fields_of(type(model))
    if not (url_fields or client_fields or parameters):  # a model class with none of them
        return {}
    attrs: dict[str, Any] = {}
    url = _base_url(model, url_fields, client_fields)
    if url:
        attrs.update(server_attributes(url))
    for key, kind, name in parameters:
        if key not in attrs:
            value = _number(kind, getattr(model, name, None))
            if value is not None:
                attrs[key] = value
    return attrs


def _tool_definitions(tools: Any) -> Any:
    """Tool definitions offered to the model, as a JSON-able list (schemas are not content)."""
    if not isinstance(tools, (list, tuple)):
        return tools
    out = []
    for tool in tools:
        if isinstance(tool, Mapping):
            function = tool.get("function")
            fn = function if isinstance(function, Mapping) else tool
            out.append({"type": tool.get("type", "function"), "name": fn.get("name"),
                        "description": fn.get("description"),
                        "parameters": fn.get("parameters", fn.get("input_schema"))})
        else:
            out.append(tool)
    return out


def tool_call_id(output: Any) -> str | None:
    """The call id on a tool's result message: langchain-core 0.3 passes it nowhere else."""
    call_id = getattr(output, "tool_call_id", None)
    return call_id if isinstance(call_id, str) and call_id else None


def tool_span(name: str, serialized: Any, call_id: Any, inputs: Any) -> tuple[str, dict[str, Any]]:
    """Name and attributes of a tool run; the call id from LangChain's kwarg, else the inputs."""
    attrs: dict[str, Any] = {attr.GEN_AI_OPERATION_NAME: attr.OP_EXECUTE_TOOL,
                             attr.GEN_AI_TOOL_NAME: name, attr.GEN_AI_TOOL_TYPE: "function"}
    description = serialized.get("description") if isinstance(serialized, Mapping) else None
    if isinstance(description, str) and description:
        attrs[attr.GEN_AI_TOOL_DESCRIPTION] = _tool_description(description)
    if call_id is None and isinstance(inputs, Mapping):
        call_id = inputs.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        attrs[attr.GEN_AI_TOOL_CALL_ID] = call_id
    return f"{attr.OP_EXECUTE_TOOL} {name}", utf8_safe_attributes(attrs)


_description_cache: dict[str, str] = {}
_DESCRIPTION_CACHE_LIMIT = 256  # tools per process worth remembering; at most ~0.5 MB


def _tool_description(description: str) -> str:
    """The description with credentials scrubbed, then capped; cached, as a tool's repeats."""
    found = _description_cache.get(description)
    if found is None:
        found = scrub_secrets(description)[:_MAX_ATTR]
        if len(description) <= _MAX_ATTR:
            if len(_description_cache) >= _DESCRIPTION_CACHE_LIMIT:
                _description_cache.clear()
            _description_cache[description] = found
    return found


def _get(obj: Any, key: str) -> Any:
    """Its attribute (LangChain's pydantic results and messages), else ``obj[key]`` of a
    mapping: no key read here is the name of a dict attribute, and the objects skip the ABC
    check, which costs more than the read."""
    value = getattr(obj, key, _ABSENT)
    if value is not _ABSENT:
        return value
    return obj.get(key) if obj.__class__ is dict or isinstance(obj, Mapping) else None


def generations(response: Any) -> list[Any]:
    """Every generation of an LLMResult-like object (or a dict of one), batches flattened;
    none if it is malformed (a caller reading it must still end the run)."""
    try:
        return [g for batch in _get(response, "generations") or () for g in (batch or ())]
    except TypeError:  # generations or a batch that is not iterable
        return []


def usage_attributes(usage: Mapping[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """The token counts of LangChain's ``usage_metadata`` (a message's or a chunk's) into ``attrs``."""
    _int(attrs, attr.GEN_AI_USAGE_INPUT_TOKENS, usage.get("input_tokens"))
    _int(attrs, attr.GEN_AI_USAGE_OUTPUT_TOKENS, usage.get("output_tokens"))
    details = usage.get("input_token_details")
    if isinstance(details, Mapping):
        _int(attrs, attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, details.get("cache_read"))
        _int(attrs, attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, details.get("cache_creation"))
    details = usage.get("output_token_details")
    if isinstance(details, Mapping):
        _int(attrs, attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, details.get("reasoning"))
    return attrs


def response_attributes(response: Any) -> dict[str, Any]:
    """Usage, response model/id and finish reasons from an LLMResult (or a dict of one)."""
    attrs: dict[str, Any] = {}
    message = response_metadata = None
    reasons: list[str] = []
    first = True  # the first batch's first generation holds the message read for the rest
    try:
        for batch in _get(response, "generations") or ():  # one pass: each object read once
            for generation in batch or ():
                generation_message = _get(generation, "message")
                meta = (_mapping_or_none(_get(generation_message, "response_metadata"))
                        if generation_message is not None else None)
                if first:
                    message, response_metadata, first = generation_message, meta, False
                reason = _finish_reason(_mapping_or_none(_get(generation, "generation_info")),
                                        meta, generation_message)
                if reason is not None:
                    reasons.append(reason)
            first = False
    except TypeError:  # generations or a batch that is not iterable: what was read so far
        pass
    llm_output = _mapping_or_none(_get(response, "llm_output")) or _EMPTY
    usage = _get(message, "usage_metadata") if message is not None else None
    if usage and (usage.__class__ is dict or isinstance(usage, Mapping)):
        usage_attributes(usage, attrs)
    elif llm_output:  # providers that report usage only there (and an empty usage_metadata)
        token_usage = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(token_usage, Mapping):
            _int(attrs, attr.GEN_AI_USAGE_INPUT_TOKENS,
                 token_usage.get("prompt_tokens", token_usage.get("input_tokens")))
            _int(attrs, attr.GEN_AI_USAGE_OUTPUT_TOKENS,
                 token_usage.get("completion_tokens", token_usage.get("output_tokens")))
    response_metadata = response_metadata or _EMPTY
    model = (response_metadata.get("model_name") or response_metadata.get("model")
             or llm_output.get("model_name") or llm_output.get("model"))
    if model and isinstance(model, str):
        attrs[attr.GEN_AI_RESPONSE_MODEL] = model
    response_id = response_metadata.get("id") or llm_output.get("id")
    if not response_id and message is not None:
        message_id = _get(message, "id")
        if isinstance(message_id, str) and not message_id.startswith(_LANGCHAIN_MESSAGE_IDS):
            response_id = message_id
    if response_id and isinstance(response_id, str):
        attrs[attr.GEN_AI_RESPONSE_ID] = response_id
    if reasons:
        attrs[attr.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(reasons)
    return attrs


# Where providers put the finish reason: OpenAI Chat Completions, Anthropic, Ollama.
_FINISH_REASON_KEYS = ("finish_reason", "stop_reason", "done_reason")
# The Responses API has no finish reason: its ``incomplete_details.reason`` or, for a completed
# response, whether it called tools, in Chat Completions' words (the same provider's dashboards).
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _mapping_or_none(value: Any) -> Mapping[str, Any] | None:
    if value.__class__ is dict or (value is not None and isinstance(value, Mapping)):
        return value  # type: ignore[no-any-return]
    return None


def generation_finish_reason(generation: Any) -> str | None:
    """One generation's finish reason (generation_info, else its message's response_metadata)."""
    info = _mapping_or_none(_get(generation, "generation_info"))
    message = _get(generation, "message")
    meta = _mapping_or_none(_get(message, "response_metadata")) if message is not None else None
    return _finish_reason(info, meta, message)


def _finish_reason(info: Mapping[str, Any] | None, meta: Mapping[str, Any] | None,
                   message: Any) -> str | None:
    for source in (info, meta):
        if source:  # None or empty (most generation_info): nothing to look up
            for key in _FINISH_REASON_KEYS:
                reason = source.get(key)
                if isinstance(reason, str) and reason:
                    return reason
    if meta and meta.get("object") == "response":  # the Responses API
        details = meta.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        if isinstance(reason, str) and reason:
            return _INCOMPLETE_REASONS.get(reason, reason)
        status = meta.get("status")
        if status == "completed":
            return "tool_calls" if _get(message, "tool_calls") else "stop"
        if isinstance(status, str) and status:
            return status
    return None


def _int(attrs: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        attrs[key] = value


def _float(attrs: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        attrs[key] = float(value)


# LangGraph interrupts and commands travel as exceptions but are control flow, not failures.
CONTROL_FLOW_ERRORS = frozenset({"GraphInterrupt", "GraphBubbleUp", "ParentCommand", "NodeInterrupt"})


# The consumer stopped iterating (GeneratorExit) or cancelled the task running the run (what
# astream_events and LangGraph do once their consumer leaves): abandoned, not failed.
ABANDONMENT = (GeneratorExit, asyncio.CancelledError)


def is_failure(error: BaseException) -> bool:
    """False for an abandoned run and LangGraph's control flow: the one rule for both the
    span's status and the metrics' ``error.type``."""
    return not isinstance(error, ABANDONMENT) and type(error).__name__ not in CONTROL_FLOW_ERRORS


_public_names: dict[type, str] = {}


def qualified_name(error: BaseException) -> str:
    """The error's class as users import it: ``openai.RateLimitError`` rather than the private
    ``openai._exceptions.RateLimitError`` where a public parent module exports the same class."""
    cls = type(error)
    name = _public_names.get(cls)
    if name is None:
        module = cls.__module__
        if module in ("builtins", None):
            name = cls.__qualname__
        else:
            name = utf8_safe(f"{module}.{cls.__qualname__}")
            parts = module.split(".")
            for end in range(1, len(parts)):
                if parts[end].startswith("_"):
                    public = sys.modules.get(".".join(parts[:end]))
                    if public is not None and getattr(public, cls.__qualname__, None) is cls:
                        name = f"{public.__name__}.{cls.__qualname__}"
                    break
        if len(_public_names) < _CACHE_LIMIT:
            _public_names[cls] = name
    return name


def is_stream_terminator(token: Any, chunk: Any) -> bool:
    """True for the empty ``chunk_position="last"`` chunk LangChain adds after a stream whose
    provider did not mark its own last chunk: it carries no token, usage or metadata."""
    if token != "" and token != []:
        return False
    message = getattr(chunk, "message", None)
    return (getattr(message, "chunk_position", None) == "last"
            and not getattr(message, "tool_call_chunks", None)
            and not getattr(message, "usage_metadata", None)
            and not getattr(message, "response_metadata", None))


# Content-block keys that hold streamed output text (text, Anthropic thinking, v1 reasoning).
_BLOCK_TEXT_KEYS = ("text", "thinking", "reasoning")


def chunk_content(token: Any, chunk: Any) -> Any:
    """What a streamed chunk that is not plain text carries as output: its content blocks'
    text, else its tool-call argument pieces; None for content-less chunks (the role-only
    opening chunk, the finish chunk, the usage-only chunk, a tool call's name-only header)."""
    if isinstance(token, str) and token:
        return token
    if isinstance(token, (list, tuple)):
        texts = []
        for block in token:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, Mapping):
                for key in _BLOCK_TEXT_KEYS:
                    text = block.get(key)
                    if isinstance(text, str):
                        texts.append(text)
                        break
        text = "".join(texts)
        if text:
            return text
    calls = getattr(getattr(chunk, "message", None), "tool_call_chunks", None)
    if calls:
        arguments = "".join(c.get("args") or "" for c in calls if isinstance(c, Mapping))
        if arguments:
            return arguments
    return None
