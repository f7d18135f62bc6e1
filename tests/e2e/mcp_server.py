"""An MCP server for the gateway's tests, written with the official SDK (MCPServer) and
served over streamable HTTP:

    python mcp_server.py NAME PORT MARKER_DIR

Its tools: `add`, `whoami` (the headers the gateway sent), `search`, `delete_everything`
(leaves a marker file: the tests prove a hidden tool is never called) and `die` (the
process exits mid-call)."""

import os
import sys
from pathlib import Path

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

name, port, marker_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
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
def search(q: str) -> str:
    """Search the docs."""
    return f"{name} found: {q}"


@mcp.tool()
def delete_everything() -> str:
    """A tool the gateway must never let through."""
    (marker_dir / f"{name}-deleted").write_text("called")
    return "deleted"


@mcp.tool()
def die() -> str:
    """Exits the process in the middle of the call."""
    os._exit(3)


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=port, streamable_http_path="/mcp")
