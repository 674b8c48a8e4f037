"""A streaming response that always cleans up and notices a client that went away.

Starlette's ``StreamingResponse`` only listens for ``http.disconnect`` under ASGI spec
versions before 2.4 and otherwise learns of a gone client at its next write, which
never comes while the engine is stalled. This response always listens, cancels the
relay on disconnect (closing the upstream connection, so vLLM aborts the generation),
and runs the reply's ``finish`` exactly once, even if the relay never started. If the
reply's chunks raise anything but a gone client, the status has been sent already: the
stream ends with one ``data: {"error": ...}`` event and closes, as any broken stream does.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from adapters.errors import GatewayError
from gateway.inference.relay import StreamReply, sse_error

log = logging.getLogger("lora_gateway.streaming")


class ProxyStreamResponse(Response):
    """Owns sending one ``StreamReply`` as server-sent events."""

    media_type = "text/event-stream"

    def __init__(self, reply: StreamReply, *, status_code: int = 200) -> None:
        self.reply = reply
        self.status_code = status_code
        self.background = None
        self.init_headers(reply.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def relay() -> None:
                    try:
                        await send(
                            {
                                "type": "http.response.start",
                                "status": self.status_code,
                                "headers": self.raw_headers,
                            }
                        )
                        try:
                            async for chunk in self.reply.chunks:
                                await send(
                                    {"type": "http.response.body", "body": chunk, "more_body": True}
                                )
                        except OSError:
                            raise
                        except Exception:
                            log.exception("streamed reply failed after its status was sent")
                            broken = sse_error(GatewayError("The gateway hit an internal error."))
                            await send(
                                {"type": "http.response.body", "body": broken, "more_body": True}
                            )
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    except OSError:
                        pass  # the client is gone; the finally below cleans up
                    finally:
                        tg.cancel_scope.cancel()

                async def watch() -> None:
                    while True:
                        message: Any = await receive()
                        if message["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(relay)
                tg.start_soon(watch)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.reply.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self.reply.finish()
