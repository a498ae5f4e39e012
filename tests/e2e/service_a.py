"""Process A of the cross-process test: a chain whose tool calls service B over HTTP.

    python service_a.py <otlp-http-traces-endpoint> <service-b-base-url> [conversation-id user-id]

The tool injects the current W3C context (trace context and baggage) into the request headers.
With a conversation id, the run happens inside ``use_conversation``, so the ids travel to B as
baggage. Prints one JSON line: the runs LangChain reported here, the headers sent, B's reply.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
import uuid

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_callbacks import OTelHandler, use_conversation


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}

    def _start(self, run_type, run_id, parent_run_id, kwargs) -> None:
        self.runs[str(run_id)] = {"type": run_type, "name": kwargs.get("name"),
                                  "parent": str(parent_run_id) if parent_run_id else None}

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw):
        self._start("chain", run_id, parent_run_id, kw)

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kw):
        self._start("tool", run_id, parent_run_id, kw)


def main(endpoint: str, b_url: str, conversation_id: str | None = None,
         user_id: str | None = None) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-service-a"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    sent: dict = {}

    @tool
    def ask_service_b(question: str) -> str:
        """Ask service B for a forecast."""
        headers: dict[str, str] = {}
        inject(headers)  # the current OTel context: this tool's span, if it is current here
        sent["headers"] = dict(headers)
        url = f"{b_url}/ask?{urllib.parse.urlencode({'q': question})}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            sent["reply"] = json.loads(resp.read())
        return sent["reply"]["answer"]

    def service_a_app(question: str, config) -> str:
        return ask_service_b.invoke({"question": question}, config=config)

    app = RunnableLambda(service_a_app).with_config(run_name="service_a_app")
    runs = Runs()
    root_run_id = uuid.uuid4()
    with use_conversation(conversation_id, user_id=user_id):
        answer = app.invoke("Oslo tomorrow?", config={
            "callbacks": [runs, OTelHandler(tracer_provider=provider)], "run_id": root_run_id})
    assert provider.force_flush(30_000), "flush failed"
    provider.shutdown()
    print(json.dumps({"answer": answer, "root_run_id": str(root_run_id), "runs": runs.runs,
                      "sent_headers": sent.get("headers"), "reply": sent.get("reply")}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
