"""A: an early client disconnect in the middle of a response.

Backports encode/uvicorn issue #111, PR #114 (first released in 0.2.6).
Broken in 0.2.0-0.2.5, h11 and httptools.

``connection_lost`` marks the request disconnected only while its body is
still arriving, and the cycle's ``send()`` has no "already disconnected"
guard, so an app still sending after the client left writes on: on h11,
``connection_lost`` itself sends ``h11.ConnectionClosed()`` in state
SEND_BODY, which raises ``LocalProtocolError`` ("Exception in callback
..._call_connection_lost") and leaves h11 in ERROR, so every later
``send()`` of the app raises too; on httptools the writes go to a closed
transport ("socket.send() raised exception.").

As upstream: ``connection_lost`` marks the request disconnected whenever its
response is not complete (before the original runs, so the original's own
check finds nothing left to do), h11's ``LocalProtocolError`` from the
``ConnectionClosed`` send is swallowed (then the original's last step,
waking a waiting ``receive()``, is done here), and ``send()`` returns at once
once the request is disconnected.  Both classes of the httptools module use
``__slots__`` in 0.2.0-0.2.20: nothing here adds an instance attribute.
"""

from typing import Callable, Tuple

from ..implementations import Release
from .base import PROTOCOL, Fix, MethodHook, protocol_methods

#: The role of the request/response cycle class (see implementations.Implementation).
CYCLE = "cycle"


def _mark_then_h11(original: Callable) -> Callable:
    import h11  # the h11 this uvicorn runs with: only h11 modules get here

    protocol_error = h11.LocalProtocolError

    def connection_lost(self, *args, **kwargs):
        cycle = self.cycle
        if cycle and not cycle.response_complete:
            cycle.disconnected = True
        try:
            return original(self, *args, **kwargs)
        except protocol_error:  # ConnectionClosed in SEND_BODY: a premature disconnect
            self.client_event.set()

    return connection_lost


def _mark_then(original: Callable) -> Callable:
    def connection_lost(self, *args, **kwargs):
        cycle = self.cycle
        if cycle and not cycle.response_complete:
            cycle.disconnected = True
        return original(self, *args, **kwargs)

    return connection_lost


def _send_unless_disconnected(original: Callable) -> Callable:
    async def send(self, *args, **kwargs):
        if self.disconnected:
            return None
        return await original(self, *args, **kwargs)

    return send


def _hooks(impl: str, version: Release) -> Tuple:
    return (
        MethodHook(PROTOCOL, "connection_lost", _mark_then_h11 if impl == "h11" else _mark_then),
        MethodHook(CYCLE, "send", _send_unless_disconnected),
    )


FIX = Fix(
    id="A",
    summary="an early client disconnect in the middle of a response",
    upstream="encode/uvicorn#111, PR #114",
    broken={"h11": ("0.2.0", "0.2.6"), "httptools": ("0.2.0", "0.2.6")},
    hooks=_hooks,
    inspects=protocol_methods(
        ("connection_lost",),
        also=(
            "RequestResponseCycle.__init__",
            "RequestResponseCycle.send",
            "RequestResponseCycle.receive",
        ),
    ),
)
