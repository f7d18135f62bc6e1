"""The MCP server of bench/mcp.sh, written with the official SDK (MCPServer): one tool,
`add`, served over streamable HTTP at /mcp, stateless and answering in JSON (no session,
no event stream), so a bare `tools/call` POST is answered 200 with the result.

    python bench/mcp_server.py PORT
"""

import sys

from mcp.server import MCPServer

port = int(sys.argv[1])
# WARNING: no uvicorn access log line per request (it would cost the server, not the gateway).
mcp = MCPServer("bench", version="1.0.0", log_level="WARNING")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        streamable_http_path="/mcp",
        json_response=True,
        stateless_http=True,
    )
