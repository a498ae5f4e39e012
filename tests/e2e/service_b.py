"""Process B of the cross-process test: an HTTP service that continues the caller's trace.

    python service_b.py <otlp-http-traces-endpoint>

Prints ``{"port": N}`` once listening on 127.0.0.1; answers ``GET /ask?q=...`` by running its
own chain under the W3C trace context extracted from the request; stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_callbacks import OTelHandler


def main(endpoint: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-service-b"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    handler = OTelHandler(tracer_provider=provider)
    chain = (
        ChatPromptTemplate.from_messages([("human", "Forecast for: {q}")])
        | FakeListChatModel(responses=["Rain until noon."])
        | StrOutputParser()
    ).with_config(run_name="service_b_chain")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            query = parse_qs(urlparse(self.path).query)
            parent = extract(self.headers)  # W3C traceparent / tracestate from the caller
            token = otel_context.attach(parent)
            run_id = uuid.uuid4()
            try:
                answer = chain.invoke({"q": query.get("q", [""])[0]},
                                      config={"callbacks": [handler], "run_id": run_id})
            finally:
                otel_context.detach(token)
            provider.force_flush(10_000)
            body = json.dumps({
                "answer": answer,
                "root_run_id": str(run_id),
                "received_traceparent": self.headers.get("traceparent"),
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
