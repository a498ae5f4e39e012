"""Small real LangChain apps for the end-to-end tests, and a run recorder.

Everything runs through langchain-core's own machinery (runnables, prompt templates, a fake
chat model, ``@tool``, a ``BaseRetriever``), so the callbacks that OTelHandler receives are
the ones LangChain really emits.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPLOSION = "step exploded on purpose"


# --- what LangChain itself reports ----------------------------------------------------------


@dataclass
class RecordedRun:
    run_id: str
    parent_run_id: str | None
    run_type: str
    name: str | None
    error: str | None = None


class RunRecorder(BaseCallbackHandler):
    """Records run_id -> parent_run_id / run type / name, as LangChain reports them."""

    def __init__(self) -> None:
        self.runs: dict[str, RecordedRun] = {}
        self._lock = threading.Lock()

    def _start(self, run_type: str, serialized: Any, run_id: UUID, parent_run_id: UUID | None,
               kwargs: dict[str, Any]) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        with self._lock:
            self.runs[str(run_id)] = RecordedRun(
                str(run_id), str(parent_run_id) if parent_run_id else None, run_type, name
            )

    def _error(self, error: BaseException, run_id: UUID) -> None:
        with self._lock:
            self.runs[str(run_id)].error = f"{type(error).__name__}: {error}"

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs):
        self._start("chain", serialized, run_id, parent_run_id, kwargs)

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs):
        self._start("chat_model", serialized, run_id, parent_run_id, kwargs)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kwargs):
        self._start("llm", serialized, run_id, parent_run_id, kwargs)

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kwargs):
        self._start("tool", serialized, run_id, parent_run_id, kwargs)

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs):
        self._start("retriever", serialized, run_id, parent_run_id, kwargs)

    def on_chain_error(self, error, *, run_id, **kwargs):
        self._error(error, run_id)

    def on_llm_error(self, error, *, run_id, **kwargs):
        self._error(error, run_id)

    def on_tool_error(self, error, *, run_id, **kwargs):
        self._error(error, run_id)

    def on_retriever_error(self, error, *, run_id, **kwargs):
        self._error(error, run_id)

    def roots(self) -> list[RecordedRun]:
        return [r for r in self.runs.values() if r.parent_run_id is None]

    def tree_of(self, root_id: str) -> dict[str, RecordedRun]:
        """The runs under (and including) ``root_id``."""
        out = {root_id: self.runs[root_id]}
        grew = True
        while grew:
            grew = False
            for run in self.runs.values():
                if run.run_id not in out and run.parent_run_id in out:
                    out[run.run_id] = run
                    grew = True
        return out


# --- OTel plumbing --------------------------------------------------------------------------


def make_provider(exporter: Any, service_name: str, *, batch: bool = True,
                  **batch_kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A TracerProvider exporting to ``exporter`` and also to an in-memory copy.

    The copy keeps what the SDK handed to the exporter (including the OTel SpanKind, which
    Phoenix does not store), so tests can compare it with what the backend received.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter, **batch_kwargs) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


# --- the app ----------------------------------------------------------------------------------


class KeywordRetriever(BaseRetriever):
    """Returns the stored documents that share a word with the query."""

    documents: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(query.lower().split())
        return [d for d in self.documents if words & set(d.page_content.lower().split())]


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"light rain in {city}"


def _explode(_: Any) -> Any:
    raise ValueError(EXPLOSION)


def build_weather_app(answer: str = "Take an umbrella.") -> RunnableLambda:
    """retriever + tool + (prompt | chat model | parser), with a step that fails and is caught.

    The run tree LangChain reports for one invoke::

        weather_app (chain)
          docs (retriever)
          get_weather (tool)
          exploding_step (chain, raises ValueError, caught by weather_app)
          answer_chain (chain: RunnableSequence)
            ChatPromptTemplate (chain)
            GenericFakeChatModel (chat_model)
            StrOutputParser (chain)
    """
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer in one short sentence."),
            ("human", "{question}\nContext: {context}\nWeather: {weather}"),
        ]
    )
    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage(content=answer)]))
    answer_chain = (prompt | model | StrOutputParser()).with_config(run_name="answer_chain")
    retriever = KeywordRetriever(
        documents=[
            Document(page_content="Umbrellas keep you dry in rain"),
            Document(page_content="Sunscreen protects from sun"),
        ]
    ).with_config(run_name="docs")
    exploding_step = RunnableLambda(_explode).with_config(run_name="exploding_step")

    def weather_app(inputs: dict[str, str], config: RunnableConfig) -> str:
        docs = retriever.invoke(inputs["question"], config=config)
        weather = get_weather.invoke({"city": inputs["city"]}, config=config)
        try:
            exploding_step.invoke(inputs, config=config)
        except ValueError:
            pass  # the app survives a failing step; its span must still say ERROR
        return answer_chain.invoke(
            {
                "question": inputs["question"],
                "context": " | ".join(d.page_content for d in docs),
                "weather": weather,
            },
            config=config,
        )

    return RunnableLambda(weather_app).with_config(run_name="weather_app")


def build_failing_pipeline() -> Any:
    """A sequence whose second step raises: the error escapes to the root run."""
    return (
        RunnableLambda(lambda x: x).with_config(run_name="passthrough")
        | RunnableLambda(_explode).with_config(run_name="exploding_step")
    ).with_config(run_name="failing_pipeline")


class RecordingExporter:
    """Wraps a SpanExporter and records each export's result, to see an outage happen."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.results: list[Any] = []
        self._lock = threading.Lock()

    def export(self, spans: Any) -> Any:
        result = self.inner.export(spans)
        with self._lock:
            self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
