"""C: one ``message_event`` shared by every request on a connection.

Backports encode/uvicorn issue #748, PR #848 (first released in 0.12.3).
Broken in 0.2.21-0.12.2, h11 and httptools.

The protocol owns one ``asyncio.Event`` and hands it to every cycle, and
nothing sets it when a response completes.  A ``receive()`` of request 1 that
is still waiting after its response (a background task listening for
``http.disconnect``) eats the wake-up meant for request 2, whose body read
then hangs; on httptools a pipelined request's body signal is eaten the same
way by the request before it.

Upstream gives every cycle its own event and sets it when the response
completes.  Sharing is harmless until one of two things is true when a
response completes: a ``receive()`` of that request is still waiting on the
event, or (httptools) requests behind it are already parsed and queued.  So
the step (run first in ``on_response_complete``, see ``completion.py``) does
upstream's work exactly then, and costs two attribute reads otherwise:

* a ``receive()`` still waiting: everything after this request moves to a
  fresh event (the protocol's own ``.set()`` calls go to
  ``self.message_event``, so they follow it), and the old one is set so the
  waiting ``receive()`` returns ``http.disconnect``;
* requests queued: the one about to start gets an event of its own, and the
  protocol's too if it is the newest; the others move when their turn comes.
  One that is not the newest sets its own event when its response completes
  (through its ``on_response``), as upstream does, since the check above
  sees only the protocol's event.

A request moved to a fresh event that already has body data or its end is
told so on the fresh event, since the old event's signal may have been
cleared by the request before it.
"""

import asyncio
import functools
from typing import Callable, Sequence, Tuple

from ..implementations import Release
from .base import Fix, completion_hooks


def reroute(protocol: object, event: asyncio.Event, queued: "Sequence[Tuple]") -> None:
    """Move the protocol and every queued cycle off ``event``, then set it."""
    fresh = asyncio.Event()
    protocol.message_event = fresh
    news = False
    for cycle, _app in queued:
        cycle.message_event = fresh
        news = news or _has_news(cycle)
    if news:
        fresh.set()
    event.set()


def isolate_next(protocol: object, queued: "Sequence[Tuple]") -> None:
    """Give the queued cycle about to start (the protocol pops the last) its own event."""
    cycle = queued[-1][0]
    fresh = asyncio.Event()
    if _has_news(cycle):
        fresh.set()
    cycle.message_event = fresh
    if cycle is protocol.cycle:
        protocol.message_event = fresh
    else:
        cycle.on_response = functools.partial(_set_then, fresh, cycle.on_response)


def _set_then(event: asyncio.Event, on_response: Callable) -> None:
    """A queued cycle's completion: wake its waiting ``receive()``, then go on."""
    event.set()
    on_response()


def _has_news(cycle: object) -> bool:
    return bool(cycle.body) or not cycle.more_body


_INSPECTS = {
    "h11": (
        "H11Protocol.on_response_complete",
        "H11Protocol.handle_events",
        "H11Protocol.connection_lost",
    ),
    "httptools": (
        "HttpToolsProtocol.on_response_complete",
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


def _inspects(impl: str, version: Release) -> "Tuple[str, ...]":
    return _INSPECTS[impl] + _CYCLE


FIX = Fix(
    id="C",
    summary="one message_event shared by every request on a connection",
    upstream="encode/uvicorn#748, PR #848",
    broken={"h11": ("0.2.21", "0.12.3"), "httptools": ("0.2.21", "0.12.3")},
    hooks=completion_hooks,
    inspects=_inspects,
    absent="0.2.0-0.2.20 have no message_event handed to every request (it came in 0.2.21)",
)
