"""C: one ``message_event`` shared by every request on a connection.

Backports encode/uvicorn issue #748, PR #848 (first released in 0.12.3).
Broken in 0.2.21-0.12.2, h11 and httptools.

The protocol owns one ``asyncio.Event`` and hands it to every cycle, and
nothing sets it when a response completes.  A ``receive()`` of request 1 that
is still waiting after its response (a background task listening for
``http.disconnect``) eats the wake-up meant for request 2, whose body read
then hangs.  The fix, as upstream: a fresh event per cycle; the protocol's
own ``self.message_event.set()`` calls (body data, end of message, connection
lost) reach the current cycle's event; and the cycle's event is set when its
response completes, so a lingering ``receive()`` returns ``http.disconnect``.

Hook: when the protocol assigns ``self.cycle``.  In 0.2.21-0.12.2 every
``.set()`` of the protocol-wide event is meant for ``self.cycle``, so pointing
the protocol's ``message_event`` at the new cycle's event reroutes them all.
"""

import asyncio
from typing import Tuple

from ..implementations import Release
from .base import PROTOCOL, AssignHook, Fix


def _own_event_per_cycle(protocol: object, cycle: object) -> None:
    if cycle is None:
        return
    event = asyncio.Event()
    cycle.message_event = event
    protocol.message_event = event
    on_response = cycle.on_response

    def on_response_complete() -> None:
        # Upstream sets the event in send() just before on_response().
        event.set()
        on_response()

    cycle.on_response = on_response_complete


def _hooks(impl: str, version: Release) -> Tuple:
    return (AssignHook(PROTOCOL, "cycle", _own_event_per_cycle),)


_INSPECTS = {
    "h11": (
        "H11Protocol.handle_events",
        "H11Protocol.connection_lost",
    ),
    "httptools": (
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol.on_body",
        "HttpToolsProtocol.on_message_complete",
        "HttpToolsProtocol.connection_lost",
    ),
}
_CYCLE = (
    "RequestResponseCycle.__init__",
    "RequestResponseCycle.send",
    "RequestResponseCycle.receive",
)


def _inspects(impl: str, version: Release) -> Tuple[str, ...]:
    return _INSPECTS[impl] + _CYCLE


FIX = Fix(
    id="C",
    summary="one message_event shared by every request on a connection",
    upstream="encode/uvicorn#748, PR #848",
    broken={"h11": ("0.2.21", "0.12.3"), "httptools": ("0.2.21", "0.12.3")},
    hooks=_hooks,
    inspects=_inspects,
)
