"""The benchmark workloads: real langchain-core / langgraph objects, no network.

Each builder takes the variant's per-call ``config`` and returns a zero-arg
callable that runs one iteration.  Builders are called once per process; the
callable is then timed many times.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterator, TypedDict

STREAM_TOKENS = 1000
NEST_DEPTH = 20
ABATCH_SIZE = 20
GRAPH_LOOPS = 5


def _seq5(config: dict) -> Callable[[], Any]:
    from langchain_core.runnables import RunnableLambda

    def step1(x):
        return x + 1

    def step2(x):
        return x * 2

    def step3(x):
        return x - 3

    def step4(x):
        return x // 2

    def step5(x):
        return str(x)

    chain = (
        RunnableLambda(step1)
        | RunnableLambda(step2)
        | RunnableLambda(step3)
        | RunnableLambda(step4)
        | RunnableLambda(step5)
    )
    return lambda: chain.invoke(7, config)


def _prompt_chat(config: dict) -> Callable[[], Any]:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a terse assistant."), ("human", "Answer briefly: {question}")]
    )
    model = FakeListChatModel(responses=["The answer is forty-two.", "Paris.", "Blue, mostly."])
    chain = prompt | model | StrOutputParser()
    return lambda: chain.invoke({"question": "what is six times seven?"}, config)


def _token_model_class():
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class TokenStreamChatModel(BaseChatModel):
        """Fake chat model whose stream yields exactly ``n_tokens`` one-token chunks."""

        n_tokens: int = STREAM_TOKENS

        @property
        def _llm_type(self) -> str:
            return "bench-token-stream"

        def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
            text = "".join(f"t{i % 10} " for i in range(self.n_tokens))
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

        def _stream(
            self,
            messages: list[BaseMessage],
            stop=None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs,
        ) -> Iterator[ChatGenerationChunk]:
            for i in range(self.n_tokens):
                token = f"t{i % 10} "
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
                if run_manager is not None:
                    run_manager.on_llm_new_token(token, chunk=chunk)
                yield chunk

    return TokenStreamChatModel


def stream_workload(n_tokens: int) -> Callable[[dict], Callable[[], Any]]:
    """A stream of ``n_tokens`` one-token chunks (stream1000; the instruction counter also
    uses 2,000 to separate the cost per token from the cost per stream)."""
    def build(config: dict) -> Callable[[], Any]:
        model = _token_model_class()(n_tokens=n_tokens)

        def run():
            n = 0
            for _ in model.stream("stream please", config):
                n += 1
            assert n >= n_tokens, n
            return n

        return run

    return build


def _nest20(config: dict) -> Callable[[], Any]:
    from langchain_core.runnables import RunnableLambda

    def leaf(x):
        return x + 1

    inner = RunnableLambda(leaf, name="nest_0")
    for depth in range(1, NEST_DEPTH):
        child = inner

        def level(x, config, _child=child):  # config is the child config LangChain passes
            return _child.invoke(x + 1, config)

        inner = RunnableLambda(level, name=f"nest_{depth}")
    outer = inner
    return lambda: outer.invoke(0, config)


def _abatch20(config: dict) -> Callable[[], Any]:
    from langchain_core.runnables import RunnableLambda

    async def add_one(x):
        return x + 1

    async def double(x):
        return x * 2

    chain = RunnableLambda(add_one) | RunnableLambda(double)
    inputs = list(range(ABATCH_SIZE))
    loop = asyncio.new_event_loop()

    def run():
        out = loop.run_until_complete(chain.abatch(inputs, config))
        assert len(out) == ABATCH_SIZE
        return out

    return run


class LoopState(TypedDict):
    """Graph state; module level so LangGraph can resolve its annotations."""

    n: int


def _graph_loop(config: dict) -> Callable[[], Any]:
    from langgraph.graph import END, START, StateGraph

    def step(state: LoopState) -> dict:
        return {"n": state["n"] + 1}

    def again(state: LoopState) -> str:
        return "step" if state["n"] < GRAPH_LOOPS else END

    g = StateGraph(LoopState)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", again, ["step", END])
    app = g.compile()

    def run():
        out = app.invoke({"n": 0}, config)
        assert out["n"] == GRAPH_LOOPS, out
        return out

    return run


WORKLOADS: dict[str, Callable[[dict], Callable[[], Any]]] = {
    "seq5": _seq5,
    "prompt_chat": _prompt_chat,
    "stream1000": stream_workload(STREAM_TOKENS),
    "nest20": _nest20,
    "abatch20": _abatch20,
    "graph_loop": _graph_loop,
}

DESCRIPTIONS = {
    "seq5": "RunnableSequence of 5 RunnableLambdas",
    "prompt_chat": "ChatPromptTemplate | FakeListChatModel | StrOutputParser",
    "stream1000": f"fake chat model .stream() of {STREAM_TOKENS} one-token chunks",
    "nest20": f"{NEST_DEPTH} RunnableLambdas, each invoking the next with its config",
    "abatch20": f"abatch of {ABATCH_SIZE} on a 2-step async lambda chain",
    "graph_loop": f"LangGraph StateGraph: one node looping {GRAPH_LOOPS}x via a conditional edge",
}
