"""E: keep-alive timer left armed while the next request is processed.

Backports encode/uvicorn issue #1637, PR #2243 (first released in 0.27.1).
Broken in 0.2.21-0.27.0.post1, h11 and httptools.

``on_response_complete`` arms the timer, then starts a request that was
already buffered (pipelined, or sent right after the previous response);
nothing disarms it, so a request slower than ``timeout_keep_alive`` is cut
off: on h11 with ``LocalProtocolError`` from ``timeout_keep_alive_handler``
and a lost response, on httptools by closing the connection mid-request.

h11, as upstream: cancel the timer when a new request starts being
processed, i.e. when the protocol assigns a new ``self.cycle`` (h11 creates
cycles only there).  httptools, as upstream: no timer while a pipelined
request is queued, i.e. cancel the one just armed if ``on_response_complete``
found a queued request to start.
"""

from typing import Callable, Tuple

from ..implementations import Release
from .base import PROTOCOL, AssignHook, Fix, MethodHook
from .timers import cancel_keepalive


def _cancel_on_new_request(protocol: object, cycle: object) -> None:
    if cycle is not None:
        cancel_keepalive(protocol)


def _no_timer_while_pipelined(original: Callable) -> Callable:
    def on_response_complete(self):
        queued = bool(self.pipeline)
        original(self)
        if queued:
            cancel_keepalive(self)

    return on_response_complete


def _hooks(impl: str, version: Release) -> Tuple:
    if impl == "h11":
        return (AssignHook(PROTOCOL, "cycle", _cancel_on_new_request),)
    return (MethodHook(PROTOCOL, "on_response_complete", _no_timer_while_pipelined),)


_INSPECTS = {
    "h11": ("H11Protocol.on_response_complete", "H11Protocol.handle_events"),
    "httptools": (
        "HttpToolsProtocol.on_response_complete",
        "HttpToolsProtocol.on_headers_complete",
    ),
}


def _inspects(impl: str, version: Release) -> Tuple[str, ...]:
    return _INSPECTS[impl]


FIX = Fix(
    id="E",
    summary="keep-alive timer left armed while the next request is processed",
    upstream="encode/uvicorn#1637, PR #2243",
    broken={"h11": ("0.2.21", "0.27.1"), "httptools": ("0.2.21", "0.27.1")},
    hooks=_hooks,
    inspects=_inspects,
)
