"""An OTLP/gRPC trace and metrics sink for bench/tracing.sh: it accepts every export and
answers at once, without decoding it (so that the collector's work does not weigh on the
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
    return b""  # an empty Export{Trace,Metrics}ServiceResponse


def main():
    port = int(sys.argv[1])
    handlers = tuple(
        grpc.method_handlers_generic_handler(
            f"opentelemetry.proto.collector.{service}",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        for service in ("trace.v1.TraceService", "metrics.v1.MetricsService")
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)
    print(f"otlp sink: {received['exports']} exports, {received['bytes'] / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
