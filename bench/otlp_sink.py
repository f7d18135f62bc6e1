"""An OTLP/gRPC trace sink for bench/tracing.sh: it accepts every export and answers at
once, without decoding the spans (so that the collector's work does not weigh on the
gateway's share of the machine). It counts exports and bytes, printed on SIGTERM."""

import signal
import sys
import threading
from concurrent import futures

import grpc

received = {"exports": 0, "bytes": 0}
lock = threading.Lock()


def export(request: bytes, context) -> bytes:
    with lock:
        received["exports"] += 1
        received["bytes"] += len(request)
    return b""  # an empty ExportTraceServiceResponse


def main():
    port = int(sys.argv[1])
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)
    print(f"otlp sink: {received['exports']} exports, {received['bytes'] / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
