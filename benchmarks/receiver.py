"""A counting OTLP trace receiver (gRPC + HTTP/protobuf), for when rotel is not installed.

    python -m benchmarks.receiver GRPC_PORT HTTP_PORT

Decodes every request with opentelemetry-proto and prints ``Received traces. spans=N`` per
request (rotel's debug-log line, so benchmarks.load counts both the same way). Runs in its own
process so its CPU is not the app's; stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

_lock = threading.Lock()


def _count(request: trace_service_pb2.ExportTraceServiceRequest) -> None:
    spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    with _lock:
        print(f"Received traces. resource_spans={len(request.resource_spans)} spans={spans}", flush=True)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 - gRPC's method name
        _count(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        _count(request)
        payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def main(argv: list[str]) -> None:
    grpc_port, http_port = int(argv[0]), int(argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", http_port), _HttpHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    http.shutdown()
    server.stop(1).wait()


if __name__ == "__main__":
    main(sys.argv[1:])
