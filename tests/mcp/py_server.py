"""The Python SDK's MCPServer on Streamable HTTP: one endpoint that serves
both eras (a request of 2026-07-28 statelessly, `initialize` as a session),
for the tests of `connect --mcp` and `check --mcp`.

    python py_server.py PORT
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("py-dual-era")


@server.tool()
def echo(message: str) -> str:
    """Echoes back the input."""
    return f"Echo: {message}"


server.run("streamable-http", port=int(sys.argv[1]))
