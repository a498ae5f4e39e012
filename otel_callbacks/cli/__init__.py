"""The ``otel-callbacks`` command: ``demo`` shows a traced LangChain app, ``view`` renders
traces from an OTLP/JSON lines file. Subcommands import their (heavier) modules lazily."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "otel-callbacks"


def _parser() -> argparse.ArgumentParser:
    from ..version import __version__

    display = argparse.ArgumentParser(add_help=False)
    display.add_argument("-a", "--attributes", action="store_true",
                         help="also show each span's attributes and events")
    display.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                         help="colour output (auto: when writing to a terminal and rich is installed)")

    parser = argparse.ArgumentParser(
        prog=PROG, description="LangChain callbacks as OpenTelemetry traces: try it, view traces.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", parents=[display], help="run a sample app (no API keys, no network) and show its trace",
        description="Run a small support assistant (retrieval, a tool-calling model, one retried "
                    "failure, a streamed answer) traced by OTelHandler, and print the trace.")
    demo.add_argument("--endpoint", metavar="URL",
                      help="also send the trace to this OTLP collector "
                           "(default: OTEL_EXPORTER_OTLP_ENDPOINT when set)")
    demo.add_argument("--protocol", choices=("grpc", "http", "http/protobuf"),
                      help="OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc for "
                           "port 4317 and http/protobuf otherwise)")
    demo.add_argument("--file", metavar="PATH", help="also append the trace to this OTLP/JSON lines file")
    demo.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                      help="give up on the collector after this long (default: 2)")
    demo.add_argument("-v", "--verbose", action="store_true", help="show exporter log messages")

    view = commands.add_parser(
        "view", parents=[display], help="render traces from an OTLP/JSON lines file",
        description="Render the traces in an OTLP/JSON lines file (as written by otel-callbacks "
                    "or the OpenTelemetry Collector's file exporter) as trees.")
    view.add_argument("file", metavar="FILE", help="the file to read, or - for stdin")
    view.add_argument("--trace-id", metavar="ID", help="only the trace with this id (a prefix is enough)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otel-callbacks`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "view":
            from .viewer import ViewError, view

            try:
                view(args.file, trace_id=args.trace_id, attributes=args.attributes, color=args.color)
            except ViewError as exc:
                return _fail(str(exc))
            return 0
        from .demo import DemoOptions, run_demo

        try:
            options = DemoOptions(endpoint=args.endpoint, protocol=args.protocol, file=args.file,
                                  timeout=args.timeout, attributes=args.attributes,
                                  color=args.color, verbose=args.verbose)
            return run_demo(options)
        except ValueError as exc:  # e.g. an unsupported OTEL_EXPORTER_OTLP_PROTOCOL
            return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 1
