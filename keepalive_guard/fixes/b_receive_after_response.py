"""B: ``receive()`` hangs once the response is sent or the client has left.

Backports encode/uvicorn issue #241, PR #281 (first released in 0.3.27).
Broken in 0.2.21-0.3.26, h11 and httptools.

From 0.2.21 the cycle's ``receive()`` always resumes reading and waits on
the connection's ``message_event``, even when the request is already
disconnected or its response complete, so it blocks until some unrelated
event sets it (often the keep-alive close, seconds later): "Likely race
condition with keep-alive http handling".

As upstream: with either flag set, ``receive()`` returns ``http.disconnect``
at once without touching reading or the event (what the original returns
after its wait; its 100-continue step has nothing to do then either: the
interim response is dropped once the response starts, and a disconnected
transport is closing).
"""

from typing import Callable, Tuple

from ..implementations import Release
from .a_early_disconnect import CYCLE
from .base import Fix, MethodHook, protocol_methods


def _disconnect_if_done(original: Callable) -> Callable:
    async def receive(self, *args, **kwargs):
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        return await original(self, *args, **kwargs)

    return receive


def _hooks(impl: str, version: Release) -> Tuple:
    return (MethodHook(CYCLE, "receive", _disconnect_if_done),)


FIX = Fix(
    id="B",
    summary="receive() hangs once the response is sent or the client has left",
    upstream="encode/uvicorn#241, PR #281",
    broken={"h11": ("0.2.21", "0.3.27"), "httptools": ("0.2.21", "0.3.27")},
    hooks=_hooks,
    inspects=protocol_methods(
        ("connection_lost",),
        also=(
            "RequestResponseCycle.receive",
            "RequestResponseCycle.__init__",
            "RequestResponseCycle.send",
        ),
    ),
    absent="before 0.2.21 receive() waits only while body is still expected",
)
