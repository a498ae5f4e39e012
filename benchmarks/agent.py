"""The production-load workload: a LangGraph tool-calling agent with a retriever, no network.

One request: retrieve context, ask the model (a fake chat model that waits a fixed latency,
like a provider's first byte, and asks for both tools), run the two tools, ask the model again
for the answer. Every run type a real agent has: graph, nodes, retriever, chat model (with
usage and model name), tools, the routing condition.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import add_messages

QUESTION = "What is the weather in Paris, and what is six times seven?"


class State(TypedDict):
    """Graph state; module level so LangGraph can resolve its annotations."""

    messages: Annotated[list, add_messages]
    context: str


def build_agent(latency: float = 0.01, tool_calls: int = 2) -> Any:
    """The compiled graph; ``latency`` seconds per model call (asyncio sleep); the model asks
    for ``tool_calls`` tool runs (alternating the two tools) on its first turn."""
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import tool
    from langgraph.graph import START, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    class ToolCallingFakeModel(BaseChatModel):
        """Asks for both tools on the first turn, answers once it has their results."""

        latency: float = 0.01
        tool_calls: int = 2
        model_name: str = "fake-agent-model-1"

        @property
        def _llm_type(self) -> str:
            return "fake-tool-calling"

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": self.model_name}

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _reply(self, messages: list[BaseMessage]) -> ChatResult:
            usage = {"input_tokens": 120, "output_tokens": 24, "total_tokens": 144}
            if messages and isinstance(messages[-1], ToolMessage):
                message = AIMessage(content="It is sunny in Paris, and 6 x 7 = 42.",
                                    usage_metadata=usage,
                                    response_metadata={"model_name": self.model_name,
                                                       "finish_reason": "stop"})
            else:
                calls = [{"name": "get_weather", "args": {"city": "Paris"}},
                         {"name": "calculator", "args": {"expression": "6*7"}}]
                message = AIMessage(content="", usage_metadata=usage, tool_calls=[
                    {**calls[i % 2], "id": f"call_{i}"} for i in range(self.tool_calls)],
                    response_metadata={"model_name": self.model_name, "finish_reason": "tool_calls"})
            return ChatResult(generations=[ChatGeneration(message=message)])

        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            time.sleep(self.latency)
            return self._reply(messages)

        async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                             run_manager: Any = None, **kwargs: Any) -> ChatResult:
            await asyncio.sleep(self.latency)
            return self._reply(messages)

    class Notes(BaseRetriever):
        """Three fixed documents: the retriever span without a vector store."""

        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content=f"note {i} about {query[:20]}", id=f"doc-{i}",
                             metadata={"source": f"notes/{i}.md"}) for i in range(3)]

        async def _aget_relevant_documents(self, query: str, *,
                                           run_manager: AsyncCallbackManagerForRetrieverRun
                                           ) -> list[Document]:
            return self._get_relevant_documents(query, run_manager=run_manager)

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @tool
    def calculator(expression: str) -> str:
        """Evaluate a product like 6*7."""
        a, _, b = expression.partition("*")
        return str(int(a) * int(b))

    tools = [get_weather, calculator]
    model = ToolCallingFakeModel(latency=latency, tool_calls=tool_calls).bind_tools(tools)
    retriever = Notes()

    async def retrieve(state: State, config: RunnableConfig) -> dict[str, Any]:
        docs = await retriever.ainvoke(state["messages"][-1].content, config)
        return {"context": "\n".join(d.page_content for d in docs)}

    async def agent(state: State, config: RunnableConfig) -> dict[str, Any]:
        prompt = [SystemMessage(content="Context:\n" + state["context"]), *state["messages"]]
        return {"messages": [await model.ainvoke(prompt, config)]}

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


async def one_request(app: Any, config: dict[str, Any]) -> Any:
    from langchain_core.messages import HumanMessage

    out = await app.ainvoke({"messages": [HumanMessage(content=QUESTION)], "context": ""}, config)
    assert "42" in out["messages"][-1].content, out
    return out
