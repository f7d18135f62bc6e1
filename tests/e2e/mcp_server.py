"""An MCP server for the gateway's tests, written with the official SDK (MCPServer) and
served over streamable HTTP:

    python mcp_server.py NAME PORT MARKER_DIR [TRANSPORT]

TRANSPORT is `streamable-http` (the default, on /mcp), `sse` (the legacy HTTP+SSE
transport, on /sse) or `stdio` (PORT is then ignored).

Its tools: `add`, `whoami` (the headers the gateway sent), `search` (logs the W3C
`traceparent` of the call's `_meta` to stderr, for the tracing tests), `getenv` (a variable
of its environment), `delete_everything`
(leaves a marker file: the tests prove a hidden tool is never called) and `die` (the
process exits mid-call). A server named `weather` also has `forecast` (a `location`, as
the mock provider's tool calls give)."""

import os
import sys
from pathlib import Path

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

name, port, marker_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
transport = sys.argv[4] if len(sys.argv) > 4 else "streamable-http"
mcp = MCPServer(name, version="1.0.0")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@mcp.tool()
def whoami(ctx: Context) -> str:
    """The authorization and x-team headers of the request."""
    headers = ctx.headers or {}
    return f"{headers.get('authorization', '-')} team={headers.get('x-team', '-')} server={name}"


@mcp.tool()
def search(q: str, ctx: Context) -> str:
    """Search the docs."""
    meta = ctx.request_context.meta or {}
    print(f"search q={q} traceparent={meta.get('traceparent', '-')} tracestate={meta.get('tracestate', '-')}",
          file=sys.stderr, flush=True)
    return f"{name} found: {q}"


@mcp.tool()
def getenv(var: str) -> str:
    """An environment variable of the server's process (empty when unset)."""
    return os.environ.get(var, "")


@mcp.tool()
def delete_everything() -> str:
    """A tool the gateway must never let through."""
    (marker_dir / f"{name}-deleted").write_text("called")
    return "deleted"


@mcp.tool()
def die() -> str:
    """Exits the process in the middle of the call."""
    os._exit(3)


if name == "weather":

    @mcp.tool()
    def forecast(location: str) -> str:
        """The weather at a place."""
        return f"sunny in {location}"


if __name__ == "__main__":
    print(f"{name}: serving over {transport}", file=sys.stderr, flush=True)
    if transport == "stdio":
        mcp.run("stdio")
    elif transport == "sse":
        mcp.run("sse", host="127.0.0.1", port=port)
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=port, streamable_http_path="/mcp")
