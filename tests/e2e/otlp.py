"""An OTLP/gRPC receiver for the tests that check the planes' spans and metrics."""

from concurrent import futures

import grpc
from conftest import free_port
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpReceiver:
    """An OTLP/gRPC trace and metrics receiver (the opentelemetry-proto services, as a
    collector serves them) that keeps every export request."""

    def __init__(self):
        received = self.received = []
        metric_exports = self.metric_exports = []

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                metric_exports.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

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
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), "")
                out.extend((service, s) for ss in rs.scope_spans for s in ss.spans)
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

    def stop(self):
        self.server.stop(0)
