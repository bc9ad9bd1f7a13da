"""A real, independent MCP client for Custard's tests: the official Python SDK.

Reads one plan (JSON) on stdin, connects as it says, and prints one JSON
object on stdout with what the server answered:

    {"transport": "http", "url": "http://127.0.0.1:PORT/mcp",
     "headers": {"Authorization": "Bearer custard_pat_..."},
     "calls": [{"tool": "run_sql", "arguments": {...}}, ...]}

    {"transport": "stdio", "command": "/path/custard-agent",
     "args": ["mcp"], "env": {"CUSTARD_DATABASE_URL": "..."}, "cwd": "/tmp/x",
     "calls": [...]}

Output:

    {"server": {"name", "version", "protocol_version", "instructions"},
     "tools": [{"name", "description", "input_schema", "output_schema",
                "annotations"}],
     "results": [{"is_error", "structured", "text"} | {"exception": "..."}]}

The SDK checks each result's structured content against the tool's output
schema, so a result that does not match its schema is an exception here.
A connection or protocol failure exits non-zero with the error on stderr.
"""

import asyncio
import json
import sys
from contextlib import AsyncExitStack

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


async def run(plan: dict) -> dict:
    async with AsyncExitStack() as stack:
        if plan["transport"] == "http":
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=plan.get("headers", {}), timeout=60.0)
            )
            streams = await stack.enter_async_context(
                streamable_http_client(plan["url"], http_client=http)
            )
        elif plan["transport"] == "stdio":
            params = StdioServerParameters(
                command=plan["command"],
                args=plan.get("args", []),
                env=plan.get("env"),
                cwd=plan.get("cwd"),
            )
            streams = await stack.enter_async_context(stdio_client(params))
        else:
            raise ValueError(f"unknown transport {plan['transport']!r}")
        read, write = streams[0], streams[1]
        session = await stack.enter_async_context(ClientSession(read, write))
        init = await session.initialize()
        listed = await session.list_tools()
        out = {
            "server": {
                "name": init.server_info.name,
                "version": init.server_info.version,
                "protocol_version": str(init.protocol_version),
                "instructions": init.instructions,
            },
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "output_schema": t.output_schema,
                    "annotations": t.annotations.model_dump(exclude_none=True)
                    if t.annotations
                    else None,
                }
                for t in listed.tools
            ],
            "results": [],
        }
        for call in plan.get("calls", []):
            try:
                result = await session.call_tool(call["tool"], call.get("arguments"))
                text = "\n".join(c.text for c in result.content if c.type == "text")
                out["results"].append(
                    {
                        "is_error": bool(result.is_error),
                        "structured": result.structured_content,
                        "text": text,
                    }
                )
            except Exception as e:  # a protocol error, or a result failing its schema
                out["results"].append({"exception": f"{type(e).__name__}: {e}"})
        return out


def main() -> None:
    plan = json.load(sys.stdin)
    result = asyncio.run(run(plan))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
