"""The one wrapper of ``on_response_complete``: the steps of C, D, E and R3.

Every response of a production server passes through here, so the fixes
that act when a response completes do not each wrap the method (a Python
call layer apiece); their steps are written out in one plain function per
implementation, each switched on by the fix's selection, in the order they
must run: C, then D and the original method, or E's step in their place
(h11: where a buffered request can start, i.e. both sides of the exchange
done, which is most responses; httptools: whenever the transport is open).
E's step cancels a pending timer before it arms one, which is D's work, so
D's check runs only before the original.  On httptools releases that have
E's upstream fix (0.27.1+), E's step is exactly the original's work, so it
runs there in place of the original too (R3 is then the only step): that
spares every response a call layer.  R3's check runs last: the current
cycle is the one answered (none started since) and its body is still
arriving.  What each step fixes, why, and for which releases: the fix's
own module.  Without a lingering ``receive()``, C, D and R3 cost an
attribute read or two.

E's stand-in writes out the original of 0.3.32 and later (it counts the
request in ``server_state``).  Older originals differ (the counter is
``self.state["total_requests"]`` to 0.3.25 and ``global_state`` in
0.3.26-0.3.31; httptools 0.2.21-0.3.2 start a queued request with a
response timeout of their own), and another instrumentor's wrapper (wrapt's,
say) may sit below ours: there E runs as upstream's fix does, the original
(the chain), then the timer cancelled if a request started.  Which one is
decided once, when the wrapper is built, from the original's code.  (E2 on
0.2.21-0.2.22, whose upgrade is a module function, not a method, is the same
step for an upgrade: see its module.)
"""

import types
from typing import Callable, FrozenSet

from ..implementations import parse_version, uvicorn_version_text
from . import e_timer_during_request
from .base import callable_original
from .c_shared_message_event import isolate_next, reroute
from .r3_body_after_response import watch
from .timers import cancel_keepalive


def wrap(impl: str, fixes: "FrozenSet[str]", inner: object) -> Callable:
    """``on_response_complete`` with the steps of the selected ``fixes``, over ``inner``
    (uvicorn's function, or what another instrumentor put there)."""
    original = callable_original(inner)
    e, e2 = "E" in fixes, "E2" in fixes
    own = stands_in(inner)
    if (e or e2) and not own:
        if impl == "h11":
            original = _h11_then_cancel(original, e, e2)
        elif e:
            original = _httptools_then_cancel(original)
        e = False
    if impl == "h11":
        return _h11(original, "C" in fixes, "D" in fixes, e, "R3" in fixes)
    # Where upstream has E's fix (0.27.1+), E's step is the original's own
    # work: done here too, it spares every response the call of the original.
    e = e or (own and _has_e_fix(impl))
    start = own and "_start_asgi_task" in inner.__code__.co_names  # 0.45.0+
    return _httptools(original, "C" in fixes, "D" in fixes, e, "R3" in fixes, start)


def stands_in(original: object) -> bool:
    """Whether E's stand-in does what ``original`` does: uvicorn's own function
    that counts the request in ``server_state`` (0.3.32 and later)."""
    return (
        type(original) is types.FunctionType  # not isinstance: a wrapt proxy passes that
        and "server_state" in original.__code__.co_names
    )


def _h11_then_cancel(original: Callable, e: bool, e2: bool) -> Callable:
    """The original, then no timer if a request (E) or an upgrade (E2) started."""

    def on_response_complete(self):
        cycle = self.cycle
        result = original(self)
        if (e and self.cycle is not cycle) or (e2 and self.scope["type"] == "websocket"):
            cancel_keepalive(self)
        return result

    return on_response_complete


def _httptools_then_cancel(original: Callable) -> Callable:
    """The original, then no timer if it started a queued request."""

    def on_response_complete(self):
        waiting = len(self.pipeline)
        result = original(self)
        if len(self.pipeline) < waiting:
            cancel_keepalive(self)
        return result

    return on_response_complete


def _has_e_fix(impl: str) -> bool:
    """Whether the installed release has E's upstream fix (its code was checked by decide)."""
    version = parse_version(uvicorn_version_text())
    return version is not None and e_timer_during_request.FIX.is_broken(impl, version) is False


def _h11(original: Callable, c: bool, d: bool, e: bool, r3: bool) -> Callable:
    import h11  # the h11 this uvicorn runs with: only h11 releases get here

    done, idle, closed, send_body = h11.DONE, h11.IDLE, h11.CLOSED, h11.SEND_BODY

    def on_response_complete(self):
        if c:  # C: a receive() of this request still waiting gets woken alone
            event = self.message_event
            if event._waiters:
                reroute(self, event, ())
        conn = self.conn
        if (
            not e
            or conn.our_state is not done
            or conn.their_state is not done
            or self.transport.is_closing()
        ):
            if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
                cancel_keepalive(self)
            original(self)
            # R3: this request answered (no other started), its body still arriving
            if r3 and conn.their_state is send_body and self.cycle.response_complete:
                watch(self, "h11")
            return
        # E: what the original does when a buffered request can start, with
        # the timer armed only if none did (upstream arms, then cancels).
        self.server_state.total_requests += 1
        if self.timeout_keep_alive_task is not None:
            cancel_keepalive(self)
        self.flow.resume_reading()
        conn.start_next_cycle()
        self.handle_events()
        # The client side is idle again (or closed) unless a request or an
        # upgrade started, or an invalid request closed the connection.
        state = conn.their_state
        if state is idle or state is closed:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    return on_response_complete


def _httptools(original: Callable, c: bool, d: bool, e: bool, r3: bool, start: bool) -> Callable:
    def on_response_complete(self):
        queued = self.pipeline
        if c:  # C: a still-waiting receive() and the next queued request get separate events
            event = self.message_event
            if event._waiters:
                reroute(self, event, queued)
            if queued:
                isolate_next(self, queued)
        if not e or self.transport.is_closing():
            if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
                cancel_keepalive(self)
            original(self)
        else:
            # E: what the original does, with the timer armed only if no
            # request is queued (as upstream from 0.27.1, whose original this
            # is: see wrap).
            self.server_state.total_requests += 1
            if self.timeout_keep_alive_task is not None:
                cancel_keepalive(self)
            self.flow.resume_reading()
            if queued:
                cycle, app = queued.pop()
                if start:  # 0.45.0+: the method the original calls (contextvars option)
                    self._start_asgi_task(cycle, app)
                    return
                task = self.loop.create_task(cycle.run_asgi(app))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        # R3: this request answered (none queued or started), its body still arriving
        if r3 and self.cycle.more_body and self.cycle.response_complete:
            watch(self, "httptools")

    return on_response_complete
