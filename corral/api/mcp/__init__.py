"""The MCP surface (issue 15): corral's sessions and sandboxes as tools for any MCP client.

``tools`` defines the tools over ``Api`` (``api``), a client of corral's own HTTP API;
``endpoint`` serves them over Streamable HTTP at ``/mcp`` of ``corral serve``, calling
the app in process with the caller's credential; ``corral mcp`` (``corral.cli.mcp``)
serves them over stdio, calling a server over the network. Either way auth, scopes and
errors are the API's own.
"""
