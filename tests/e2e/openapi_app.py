"""A plain HTTP API for the OpenAPI-to-MCP tests (tests/e2e/test_mcp_openapi.py), with the
standard library only:

    python openapi_app.py PORT

`GET /api/pets?limit=N`, `GET /api/pets/{id}` (404 when unknown; `HEAD` answers its
headers, the length of the body it would send included, and no body), `POST /api/pets` (a
JSON pet, answered 201 with its id) and `GET /api/whoami` (the authorization and x-trace
headers it received)."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PETS = {1: {"id": 1, "name": "Rex"}, 2: {"id": 2, "name": "Tom"}, 3: {"id": 3, "name": "Kit"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status: int, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/api/pets":
            limit = int(parse_qs(url.query).get("limit", ["10"])[0])
            return self.reply(200, list(PETS.values())[:limit])
        if url.path == "/api/whoami":
            return self.reply(200, {"authorization": self.headers.get("authorization"),
                                    "x-trace": self.headers.get("x-trace")})
        if url.path.startswith("/api/pets/"):
            pet = PETS.get(int(url.path.rsplit("/", 1)[1]) if url.path.rsplit("/", 1)[1].isdigit() else -1)
            return self.reply(200, pet) if pet else self.reply(404, {"error": "no such pet"})
        self.reply(404, {"error": "no such route"})

    def do_HEAD(self):
        pet = PETS.get(int(self.path.rsplit("/", 1)[1])) if self.path.rsplit("/", 1)[1].isdigit() else None
        self.send_response(200 if pet else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(json.dumps(pet or {"error": "no such pet"}))))
        self.end_headers()

    def do_POST(self):
        if urlparse(self.path).path != "/api/pets":
            return self.reply(404, {"error": "no such route"})
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if self.headers.get("content-type") != "application/json" or "name" not in body:
            return self.reply(400, {"error": "a pet is {\"name\": ...} in JSON"})
        self.reply(201, {"id": 4, **body})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.request_queue_size = 128
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
