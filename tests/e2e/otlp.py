"""OTLP receivers for the tests that check the services' spans, metrics and logs: one over
gRPC (the opentelemetry-proto services, as a collector serves them) and one over
HTTP/protobuf (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`, as a collector's OTLP/HTTP
receiver takes them). Both keep every export request. And a collector that never
answers (`Blackhole`)."""

import socket
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from conftest import free_port
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Received:
    """What a receiver was sent, and the lookups the tests make on it."""

    def __init__(self):
        self.received = []
        self.metric_exports = []
        self.log_exports = []

    def received_spans(self) -> list:
        return [s for r in self.received for rs in r.resource_spans for ss in rs.scope_spans
                for s in ss.spans]

    def spans(self, name: str = "routeiq.route") -> list:
        return [s for s in self.received_spans() if s.name == name]

    def service_spans(self) -> list:
        """(service.name, span) of every span received."""
        out = []
        for r in self.received:
            for rs in r.resource_spans:
                out.extend((service_of(rs.resource), s) for ss in rs.scope_spans for s in ss.spans)
        return out

    def metric(self, name: str):
        """The latest export of metric `name` (cumulative: the totals so far), or None."""
        for r in reversed(self.metric_exports):
            for rm in r.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            return m
        return None

    def log_records(self) -> list:
        """(service.name, log record) of every log record received."""
        out = []
        for r in self.log_exports:
            for rl in r.resource_logs:
                out.extend((service_of(rl.resource), lr) for sl in rl.scope_logs for lr in sl.log_records)
        return out


def service_of(resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")


def attributes(record) -> dict:
    """A span's or log record's attributes, each as its Python value."""
    out = {}
    for a in record.attributes:
        v = a.value
        out[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


class OtlpReceiver(_Received):
    """An OTLP/gRPC receiver of traces, metrics and logs (on `port`, else a free one)."""

    def __init__(self, port: int | None = None):
        super().__init__()
        received, metric_exports, log_exports = self.received, self.metric_exports, self.log_exports

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                metric_exports.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                log_exports.append(request)
                return logs_service_pb2.ExportLogsServiceResponse()

        self.port = port or free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self):
        self.server.stop(0)


class OtlpHttpReceiver(_Received):
    """An OTLP/HTTP receiver: protobuf bodies on `/v1/traces`, `/v1/metrics` and `/v1/logs`,
    answered as the specification says (200 with the export response; 415 for another
    content type). `requests` keeps each request's path and headers."""

    def __init__(self):
        super().__init__()
        this = self
        self.requests = []
        routes = {
            "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest,
                           trace_service_pb2.ExportTraceServiceResponse, self.received),
            "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                            metrics_service_pb2.ExportMetricsServiceResponse, self.metric_exports),
            "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest,
                         logs_service_pb2.ExportLogsServiceResponse, self.log_exports),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                this.requests.append((self.path, dict(self.headers)))
                route = routes.get(self.path)
                if route is None:
                    return self.answer(404, b"")
                if self.headers.get("content-type") != "application/x-protobuf":
                    return self.answer(415, b"")
                request_type, response_type, kept = route
                kept.append(request_type.FromString(body))
                self.answer(200, response_type().SerializeToString())

            def answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """A collector that accepts connections and reads what it is sent, but never answers:
    every export waits for its timeout. `port` takes over a given port (a receiver's that
    went away)."""

    def __init__(self, port: int | None = None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.received = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()
