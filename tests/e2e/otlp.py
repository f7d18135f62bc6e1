"""An OTLP/gRPC trace receiver for the tests that check the data plane's spans."""

from concurrent import futures

import grpc
from conftest import free_port
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpReceiver:
    """An OTLP/gRPC trace receiver (the opentelemetry-proto service, as a collector
    serves it) that keeps every export request."""

    def __init__(self):
        received = self.received = []

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
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

    def stop(self):
        self.server.stop(0)
