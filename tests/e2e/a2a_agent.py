"""An A2A agent written with the official `a2a-sdk`'s server classes, for the gateway's
end-to-end tests.

    a2a_agent.py PORT VERSION REQUESTS_LOG

VERSION `1.0`: its card offers one JSON-RPC interface, protocol 1.0, so callers speak 1.0
(`SendMessage`, `SendStreamingMessage`, `GetTask`, ...). VERSION `0.3`: its card offers
only protocol 0.3 (the SDK adds the card's legacy `url`, `protocolVersion` and
`preferredTransport`, and answers 0.3's `message/send`, `message/stream`, `tasks/get`...),
so callers speak 0.3.

Each request's method, path, headers and JSON-RPC method are appended to REQUESTS_LOG as
a JSON line.

What it does with a message's text:
- `slow`: a task that takes 30 s (to be cancelled);
- `hold:<path>`: a task that waits (up to 30 s) for the file at <path> after its first update;
- `die`: the process exits after the first status update (an agent dying mid-stream);
- `msg`: one Message, no task;
- anything else: a task with two `working` updates, one artifact `echo: <text>`, then
  `completed`.
"""

import asyncio
import json
import os
import sys

import uvicorn
from a2a.helpers import new_task, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette

PORT, VERSION, REQUESTS_LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
BASE = f"http://127.0.0.1:{PORT}/"


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if "msg" in text:
            await event_queue.enqueue_event(new_text_message(f"echo: {text}", context_id=context.context_id))
            return
        if context.current_task is None:
            await event_queue.enqueue_event(
                new_task(context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED))
        up = TaskUpdater(event_queue, context.task_id, context.context_id)
        await up.start_work(up.new_agent_message([new_text_part("thinking")]))
        if "die" in text:
            await asyncio.sleep(0.3)  # the update is on its way to the caller
            os._exit(3)
        if text.startswith("hold:"):
            for _ in range(300):
                if os.path.exists(text[5:].strip()):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(30 if "slow" in text else 0.1)
        await up.update_status(TaskState.TASK_STATE_WORKING, up.new_agent_message([new_text_part("still working")]))
        await up.add_artifact([new_text_part(f"echo: {text}")], name="echo", last_chunk=True)
        await up.complete(up.new_agent_message([new_text_part("done")]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


card = AgentCard(
    name=f"Echo {VERSION}",
    description="Echoes its input as a task with status updates and an artifact.",
    version="1.0.0",
    supported_interfaces=[AgentInterface(url=BASE, protocol_binding="JSONRPC", protocol_version=VERSION)],
    capabilities=AgentCapabilities(streaming=True, push_notifications=False),
    default_input_modes=["text/plain"],
    default_output_modes=["text/plain"],
    skills=[AgentSkill(id="echo", name="Echo", description="Echo the input", tags=["echo"])],
)
handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
inner = Starlette(routes=create_agent_card_routes(card)
                  + create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=VERSION == "0.3"))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await inner(scope, receive, send)
    seen = {"method": scope["method"], "path": scope["path"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}
    body = b""

    async def recv():
        nonlocal body
        m = await receive()
        if m["type"] == "http.request":
            body += m.get("body", b"")
            if not m.get("more_body"):
                try:
                    seen["rpc"] = json.loads(body).get("method")
                except ValueError:
                    pass
                with open(REQUESTS_LOG, "a") as f:
                    f.write(json.dumps(seen) + "\n")
        return m

    if scope["method"] == "GET":
        with open(REQUESTS_LOG, "a") as f:
            f.write(json.dumps(seen) + "\n")
    await inner(scope, recv, send)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
