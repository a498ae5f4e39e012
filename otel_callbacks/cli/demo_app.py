"""A small support assistant built only from langchain-core parts, with no API keys.

It exercises what real apps do, so its trace shows what users will see in theirs: retrieval
from an in-memory knowledge base, a chat model that calls a tool, a transient model failure
absorbed by LangChain's retry, and a streamed final answer. The model is a scripted
``BaseChatModel`` (tool call first, answer after the tool result) reporting token usage and
its model name like a provider integration does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool
from pydantic import PrivateAttr

QUESTION = "Where is my order A-1042, and can I still change the delivery address?"

DOCUMENTS = (
    Document(id="kb-7", page_content="Orders can be changed, including the delivery address, "
             "until they leave the warehouse.", metadata={"source": "help/orders.md"}),
    Document(id="kb-12", page_content="Delivery usually takes 2 to 4 working days once an "
             "order has shipped.", metadata={"source": "help/delivery.md"}),
    Document(id="kb-3", page_content="Refunds are issued to the original payment method "
             "within 5 days.", metadata={"source": "help/refunds.md"}),
)


class ServiceUnavailable(RuntimeError):
    """What a provider's 503 looks like: transient, worth a retry."""


class KnowledgeBase(BaseRetriever):
    """Ranks documents by words shared with the query: enough for a realistic retrieval run."""

    documents: Sequence[Document] = DOCUMENTS
    k: int = 2
    latency: float = 0.015

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        time.sleep(self.latency)
        words = _words(query)
        ranked = sorted(self.documents, key=lambda d: -len(words & _words(d.page_content)))
        return list(ranked[:self.k])


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's shipping status by its id."""
    time.sleep(0.025)
    return f"Order {order_id}: packed, leaves the warehouse tomorrow at 09:00."


class ScriptedChatModel(BaseChatModel):
    """A chat model that behaves like a tool-calling provider model, deterministically.

    With tools bound and no tool result yet it asks for ``lookup_order``; otherwise it answers
    from the conversation. The first ``failures`` calls raise ``ServiceUnavailable``.
    """

    model_name: str = "scripted-chat-1"
    latency: float = 0.06
    chunk_delay: float = 0.012
    failures: int = 0
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "demo"
        params["ls_model_name"] = self.model_name
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        self._calls += 1
        if self._calls <= self.failures:
            time.sleep(self.latency / 3)
            raise ServiceUnavailable("503 model overloaded, please retry")
        time.sleep(self.latency)
        if kwargs.get("tools") and not any(isinstance(m, ToolMessage) for m in messages):
            message = AIMessage(content="", tool_calls=[
                {"name": "lookup_order", "args": {"order_id": _order_id(messages)},
                 "id": "call_1", "type": "tool_call"}])
            reason = "tool_calls"
        else:
            message = AIMessage(content=_answer(messages))
            reason = "stop"
        message.usage_metadata = _usage(messages, str(message.content) or "lookup_order")
        message.response_metadata = {"model_name": self.model_name, "finish_reason": reason}
        return ChatResult(generations=[ChatGeneration(message=message,
                                                      generation_info={"finish_reason": reason})])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text = _answer(messages)
        for piece in re.findall(r"\S+\s*", text):
            time.sleep(self.chunk_delay)
            # LangChain's stream() reports each chunk to the callbacks itself.
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=_usage(messages, text),
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"}))


def build_app() -> Runnable[str, str]:
    """The assistant as one runnable: question in, streamed answer text out."""
    retriever = KnowledgeBase()
    model = ScriptedChatModel(failures=1)
    planner = model.bind_tools([lookup_order]).with_retry(
        retry_if_exception_type=(ServiceUnavailable,), stop_after_attempt=3,
        wait_exponential_jitter=False,
    ).with_config(run_name="plan_with_retry")

    def support_agent(question: str) -> str:
        documents = retriever.invoke(question)
        context = "\n".join(d.page_content for d in documents)
        messages: list[BaseMessage] = [
            SystemMessage(f"You are a helpful support assistant. Context:\n{context}"),
            HumanMessage(question),
        ]
        request = planner.invoke(messages)
        messages.append(request)
        for call in request.tool_calls:
            messages.append(lookup_order.invoke(call))
        return "".join(str(chunk.content) for chunk in model.stream(messages))

    return RunnableLambda(support_agent, name="support_agent")


def run(callbacks: list[Any], question: str = QUESTION) -> str:
    """Run the assistant once with ``callbacks`` as request-time callbacks."""
    return build_app().invoke(question, config={
        "callbacks": callbacks, "tags": ["demo"], "metadata": {"app": "otel-callbacks-demo"}})


# --- the script behind the model ------------------------------------------------------------
def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9-]+", text.lower()) if len(w) > 2}


def _order_id(messages: Sequence[BaseMessage]) -> str:
    found = re.search(r"\b[A-Z]-\d+\b", " ".join(str(m.content) for m in messages))
    return found.group(0) if found else "unknown"


def _answer(messages: Sequence[BaseMessage]) -> str:
    status = next((str(m.content) for m in reversed(messages) if isinstance(m, ToolMessage)), "")
    if status:
        return (f"{status} It has not left the warehouse yet, so you can still change the "
                "delivery address from your account page.")
    return "I could not find that order; could you check the order id?"


def _usage(messages: Sequence[BaseMessage], output: str) -> Any:
    prompt = sum(len(str(m.content).split()) for m in messages)
    completion = len(output.split())
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": prompt + completion}
