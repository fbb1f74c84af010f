"""The one wrapper of ``on_response_complete``: the steps of C, D and E.

Every response of a production server passes through here, so the fixes
that act when a response completes do not each wrap the method (a Python
call layer apiece); their steps are written out in one plain function per
implementation, each switched on by the fix's selection, in the order they
must run: C, then D and the original method, or E's step in their place
(h11: where a buffered request can start, i.e. both sides of the exchange
done, which is most responses; httptools: whenever the transport is open).
E's step cancels a pending timer before it arms one, which is D's work, so
D's check runs only before the original.  What each step fixes, why,
and for which releases: the fix's own module.  Without a lingering
``receive()``, C and D cost an attribute read or two.

E's step stands in for the original only when what it wraps is uvicorn's
own function; over another instrumentor's wrapper (wrapt's, say) it calls
that and then does upstream's own E fix, cancelling the timer once a
request has started, so the other wrapper's behaviour is kept.
"""

import types
from typing import Callable, FrozenSet

from .c_shared_message_event import isolate_next, reroute
from .timers import cancel_keepalive


def wrap(impl: str, fixes: "FrozenSet[str]", inner: object) -> Callable:
    """``on_response_complete`` with the steps of the selected ``fixes``, over ``inner``
    (uvicorn's function, or what another instrumentor put there)."""
    direct = type(inner) is types.FunctionType  # not isinstance: a wrapt proxy passes that
    if direct:
        original = inner
    else:

        def original(self):
            return inner.__get__(self, type(self))()  # bound, as the instrumentor expects

    return (_h11 if impl == "h11" else _httptools)(
        original, "C" in fixes, "D" in fixes, "E" in fixes, direct
    )


def _h11(original: Callable, c: bool, d: bool, e: bool, direct: bool) -> Callable:
    import h11  # the h11 this uvicorn runs with: only h11 releases get here

    done, idle, closed = h11.DONE, h11.IDLE, h11.CLOSED
    stand_in = e and direct

    def on_response_complete(self):
        if c:  # C: a receive() of this request still waiting gets woken alone
            event = self.message_event
            if event._waiters:
                reroute(self, event, ())
        conn = self.conn
        if (
            not stand_in
            or conn.our_state is not done
            or conn.their_state is not done
            or self.transport.is_closing()
        ):
            if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
                cancel_keepalive(self)
            result = original(self)
            if e and not direct:  # E as upstream: no timer once a request started
                state = conn.their_state
                if state is not idle and state is not closed:
                    cancel_keepalive(self)
            return result
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


def _httptools(original: Callable, c: bool, d: bool, e: bool, direct: bool) -> Callable:
    stand_in = e and direct

    def on_response_complete(self):
        queued = self.pipeline
        if c:  # C: a still-waiting receive() and the next queued request get separate events
            event = self.message_event
            if event._waiters:
                reroute(self, event, queued)
            if queued:
                isolate_next(self, queued)
        if not stand_in or self.transport.is_closing():
            if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
                cancel_keepalive(self)
            waiting = len(queued)
            result = original(self)
            if e and len(queued) < waiting:  # E as upstream: no timer once a request started
                cancel_keepalive(self)
            return result
        # E: what the original does, with the timer armed only if no request
        # is queued (as upstream from 0.27.1).
        self.server_state.total_requests += 1
        if self.timeout_keep_alive_task is not None:
            cancel_keepalive(self)
        self.flow.resume_reading()
        if queued:
            cycle, app = queued.pop()
            task = self.loop.create_task(cycle.run_asgi(app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    return on_response_complete
