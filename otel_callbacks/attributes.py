"""Attribute and event names, in one place.

GenAI names come from ``opentelemetry-semantic-conventions`` (its incubating gen_ai module) so
they track the conventions; the ``langchain.*`` names are ours and live only here.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server

try:  # newer than some semconv releases we accept; the fallbacks are the conventions' spelling
    from opentelemetry.semconv._incubating.attributes import session_attributes as _session
    from opentelemetry.semconv._incubating.attributes import user_attributes as _user
except ImportError:  # pragma: no cover - old semconv
    _session = _user = None  # type: ignore[assignment]


def _gen(name: str, fallback: str) -> str:
    # Older semconv releases lack some names; the fallback is the conventions' spelling.
    return getattr(_gen_ai, name, fallback)


# --- GenAI semantic conventions -------------------------------------------------------------
GEN_AI_OPERATION_NAME = _gen("GEN_AI_OPERATION_NAME", "gen_ai.operation.name")
GEN_AI_PROVIDER_NAME = _gen("GEN_AI_PROVIDER_NAME", "gen_ai.provider.name")
GEN_AI_REQUEST_MODEL = _gen("GEN_AI_REQUEST_MODEL", "gen_ai.request.model")
GEN_AI_REQUEST_TEMPERATURE = _gen("GEN_AI_REQUEST_TEMPERATURE", "gen_ai.request.temperature")
GEN_AI_REQUEST_MAX_TOKENS = _gen("GEN_AI_REQUEST_MAX_TOKENS", "gen_ai.request.max_tokens")
GEN_AI_REQUEST_TOP_P = _gen("GEN_AI_REQUEST_TOP_P", "gen_ai.request.top_p")
GEN_AI_REQUEST_TOP_K = _gen("GEN_AI_REQUEST_TOP_K", "gen_ai.request.top_k")
GEN_AI_REQUEST_FREQUENCY_PENALTY = _gen("GEN_AI_REQUEST_FREQUENCY_PENALTY",
                                        "gen_ai.request.frequency_penalty")
GEN_AI_REQUEST_PRESENCE_PENALTY = _gen("GEN_AI_REQUEST_PRESENCE_PENALTY",
                                       "gen_ai.request.presence_penalty")
GEN_AI_REQUEST_SEED = _gen("GEN_AI_REQUEST_SEED", "gen_ai.request.seed")
GEN_AI_REQUEST_STOP_SEQUENCES = _gen("GEN_AI_REQUEST_STOP_SEQUENCES", "gen_ai.request.stop_sequences")
GEN_AI_REQUEST_STREAM = _gen("GEN_AI_REQUEST_STREAM", "gen_ai.request.stream")
GEN_AI_RESPONSE_MODEL = _gen("GEN_AI_RESPONSE_MODEL", "gen_ai.response.model")
GEN_AI_RESPONSE_ID = _gen("GEN_AI_RESPONSE_ID", "gen_ai.response.id")
GEN_AI_RESPONSE_FINISH_REASONS = _gen("GEN_AI_RESPONSE_FINISH_REASONS", "gen_ai.response.finish_reasons")
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = _gen(
    "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK", "gen_ai.response.time_to_first_chunk"
)
GEN_AI_USAGE_INPUT_TOKENS = _gen("GEN_AI_USAGE_INPUT_TOKENS", "gen_ai.usage.input_tokens")
GEN_AI_USAGE_OUTPUT_TOKENS = _gen("GEN_AI_USAGE_OUTPUT_TOKENS", "gen_ai.usage.output_tokens")
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = _gen(
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS", "gen_ai.usage.cache_read.input_tokens"
)
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = _gen(
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS", "gen_ai.usage.cache_creation.input_tokens"
)
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = _gen(
    "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS", "gen_ai.usage.reasoning.output_tokens"
)
GEN_AI_TOOL_NAME = _gen("GEN_AI_TOOL_NAME", "gen_ai.tool.name")
GEN_AI_TOOL_CALL_ID = _gen("GEN_AI_TOOL_CALL_ID", "gen_ai.tool.call.id")
GEN_AI_TOOL_DESCRIPTION = _gen("GEN_AI_TOOL_DESCRIPTION", "gen_ai.tool.description")
GEN_AI_TOOL_TYPE = _gen("GEN_AI_TOOL_TYPE", "gen_ai.tool.type")
GEN_AI_TOOL_DEFINITIONS = _gen("GEN_AI_TOOL_DEFINITIONS", "gen_ai.tool.definitions")
GEN_AI_TOOL_CALL_ARGUMENTS = _gen("GEN_AI_TOOL_CALL_ARGUMENTS", "gen_ai.tool.call.arguments")
GEN_AI_TOOL_CALL_RESULT = _gen("GEN_AI_TOOL_CALL_RESULT", "gen_ai.tool.call.result")
GEN_AI_AGENT_NAME = _gen("GEN_AI_AGENT_NAME", "gen_ai.agent.name")
GEN_AI_INPUT_MESSAGES = _gen("GEN_AI_INPUT_MESSAGES", "gen_ai.input.messages")
GEN_AI_OUTPUT_MESSAGES = _gen("GEN_AI_OUTPUT_MESSAGES", "gen_ai.output.messages")
GEN_AI_SYSTEM_INSTRUCTIONS = _gen("GEN_AI_SYSTEM_INSTRUCTIONS", "gen_ai.system_instructions")
GEN_AI_RETRIEVAL_QUERY_TEXT = _gen("GEN_AI_RETRIEVAL_QUERY_TEXT", "gen_ai.retrieval.query.text")
GEN_AI_RETRIEVAL_DOCUMENTS = _gen("GEN_AI_RETRIEVAL_DOCUMENTS", "gen_ai.retrieval.documents")
GEN_AI_TOKEN_TYPE = _gen("GEN_AI_TOKEN_TYPE", "gen_ai.token.type")
ERROR_TYPE = _error.ERROR_TYPE
SERVER_ADDRESS = _server.SERVER_ADDRESS
SERVER_PORT = _server.SERVER_PORT

# Conversation and user of a run tree (conversation.py); never metric attributes.
GEN_AI_CONVERSATION_ID = _gen("GEN_AI_CONVERSATION_ID", "gen_ai.conversation.id")
SESSION_ID = getattr(_session, "SESSION_ID", "session.id")
USER_ID = getattr(_user, "USER_ID", "user.id")

# Evaluations of a finished run (evaluation.py).
GEN_AI_EVALUATION_NAME = _gen("GEN_AI_EVALUATION_NAME", "gen_ai.evaluation.name")
GEN_AI_EVALUATION_SCORE_VALUE = _gen("GEN_AI_EVALUATION_SCORE_VALUE", "gen_ai.evaluation.score.value")
GEN_AI_EVALUATION_SCORE_LABEL = _gen("GEN_AI_EVALUATION_SCORE_LABEL", "gen_ai.evaluation.score.label")
GEN_AI_EVALUATION_EXPLANATION = _gen("GEN_AI_EVALUATION_EXPLANATION", "gen_ai.evaluation.explanation")

# Operation names (values of gen_ai.operation.name).
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EMBEDDINGS = "embeddings"
OP_EXECUTE_TOOL = "execute_tool"
OP_INVOKE_AGENT = "invoke_agent"
OP_RETRIEVAL = "retrieval"

# --- otel-callbacks' own names --------------------------------------------------------------
RUN_ID = "langchain.run.id"
RUN_TYPE = "langchain.run.type"
RUN_NAME = "langchain.run.name"
RUN_TAGS = "langchain.run.tags"
RUN_METADATA_PREFIX = "langchain.metadata."
# User metadata keys and tags left off a span to keep within its attribute limit (budget.py).
METADATA_DROPPED_COUNT = "langchain.metadata.dropped_count"
RUN_ORPHANED = "langchain.run.orphaned"
RUN_EVICTED = "langchain.run.evicted"
RUN_ABANDONED = "langchain.run.abandoned"
RUN_INPUTS = "langchain.run.inputs"
RUN_OUTPUTS = "langchain.run.outputs"
LLM_TOKEN_COUNT = "langchain.llm.token_count"
LLM_RETRY_COUNT = "langchain.run.retry_count"
RETRIEVAL_DOCUMENT_COUNT = "langchain.retriever.document_count"
# Why a span links to another: a resumed run to the run it continues (resume.py), an
# evaluation to the run it evaluates (evaluation.py).
LINK_REASON = "langchain.link.reason"
LINK_MATCHED_BY = "langchain.link.matched_by"
LINK_REASON_RESUME = "resume"
LINK_REASON_EVALUATION = "evaluation"
# LangGraph's interrupts and resumes (resume.py).
GRAPH_RESUMED = "langgraph.resumed"
CHECKPOINT_ID = "langgraph.checkpoint.id"
THREAD_ID = "langgraph.thread.id"
INTERRUPT_STATUS = "langgraph.interrupt.status"
INTERRUPT_COUNT = "langgraph.interrupt.count"
INTERRUPT_IDS = "langgraph.interrupt.ids"

# Span event names.
EVENT_FIRST_TOKEN = "gen_ai.first_token"
EVENT_TOKEN = "gen_ai.token"
EVENT_RETRY = "langchain.retry"
EVENT_TEXT = "langchain.text"
EVENT_AGENT_ACTION = "langchain.agent.action"
EVENT_AGENT_FINISH = "langchain.agent.finish"
EVENT_CUSTOM = "langchain.custom_event"
EVENT_ORPHANED = "langchain.run.orphaned"
EVENT_INTERRUPT = "langgraph.interrupt"
EVENT_RESUME = "langgraph.resume"

# Run types, as LangChain names them.
CHAIN = "chain"
LLM = "llm"
CHAT_MODEL = "chat_model"
TOOL = "tool"
RETRIEVER = "retriever"
