"""E2: h11 keep-alive timer left armed across a WebSocket upgrade.

Backports encode/uvicorn PR #3107 (first released in 0.53.0).
Broken in 0.2.21-0.52.4, h11 only.

The E fix cancels the timer after the WebSocket-upgrade early return of
``handle_events``, so an upgrade pipelined behind a plain request keeps the
timer armed and ``timeout_keep_alive_handler`` later raises
``LocalProtocolError``.  Upstream moved the cancel to the top of the request
branch; we cancel on entry to the upgrade method, which that branch calls
before anything else can happen to the connection.  In 0.2.21-0.2.22 the
upgrade is a function of the websockets module (``websocket_upgrade(self)``,
the HTTP protocol serving the WebSocket itself), not a method: there the step
is in ``on_response_complete`` (``completion.py``), cancelling the timer once
the request it started turned out to be an upgrade.
"""

from typing import Callable, Tuple

from ..implementations import Release, release
from .base import PROTOCOL, CompletionHook, Fix, MethodHook
from .timers import NO_TIMER, cancel_keepalive


def upgrade_method(version: Release) -> str:
    """``handle_upgrade(event)`` 0.3.0-0.18.3; ``handle_websocket_upgrade`` since;
    before 0.3.0 the module function ``websocket_upgrade(self)``: ''."""
    if version < release("0.3.0"):
        return ""
    return "handle_upgrade" if version < release("0.19.0") else "handle_websocket_upgrade"


def _cancel_before(original: Callable) -> Callable:
    def upgrade(self, *args, **kwargs):
        cancel_keepalive(self)
        return original(self, *args, **kwargs)

    return upgrade


def _hooks(impl: str, version: Release) -> Tuple:
    method = upgrade_method(version)
    if not method:
        return (CompletionHook(impl),)
    return (MethodHook(PROTOCOL, method, _cancel_before),)


def _inspects(impl: str, version: Release) -> "Tuple[str, ...]":
    method = upgrade_method(version)
    return ("H11Protocol.on_response_complete", "H11Protocol.handle_events") + (
        ("H11Protocol." + method,) if method else ()
    )


FIX = Fix(
    id="E2",
    summary="h11 keep-alive timer left armed across a WebSocket upgrade",
    upstream="encode/uvicorn PR #3107",
    broken={"h11": ("0.2.21", "0.53.0"), "httptools": None},
    hooks=_hooks,
    inspects=_inspects,
    not_applicable={"httptools": "h11 only; the httptools upgrade race is fix R2"},
    absent=NO_TIMER,
)
