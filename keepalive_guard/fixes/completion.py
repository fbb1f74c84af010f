"""The one wrapper of ``on_response_complete``: the steps of C, D and E.

Every response of a production server passes through here, so the fixes
that act when a response completes do not each wrap the method (a Python
call layer apiece); their steps are written out in one plain function per
implementation, each switched on by the fix's selection, in the order they
must run: C, D, the original method, E.  On httptools with a request queued,
E's step takes the original's place (see its module).  What each step
fixes, why, and for which releases: the fix's own module.  The common path
(no lingering ``receive()``, nothing pipelined) costs a few attribute reads.
"""

from typing import Callable, FrozenSet

from .c_shared_message_event import isolate_next, reroute
from .timers import cancel_keepalive


def wrap(impl: str, original: Callable, fixes: "FrozenSet[str]") -> Callable:
    """``original`` with the steps of the selected ``fixes`` around it."""
    return (_h11 if impl == "h11" else _httptools)(
        original, "C" in fixes, "D" in fixes, "E" in fixes
    )


def _h11(original: Callable, c: bool, d: bool, e: bool) -> Callable:
    def on_response_complete(self):
        if c:  # C: a receive() of this request still waiting gets woken alone
            event = self.message_event
            if event._waiters:
                reroute(self, event, ())
        if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
            cancel_keepalive(self)
        if not e:
            return original(self)
        # E: the original starts a buffered request itself (handle_events);
        # if it did, that request runs without the timer it just armed.
        cycle = self.cycle
        result = original(self)
        if self.cycle is not cycle:
            cancel_keepalive(self)
        return result

    return on_response_complete


def _httptools(original: Callable, c: bool, d: bool, e: bool) -> Callable:
    def on_response_complete(self):
        queued = self.pipeline
        if c:  # C: a still-waiting receive() and the next queued request get separate events
            event = self.message_event
            if event._waiters:
                reroute(self, event, queued)
            if queued:
                isolate_next(self, queued)
        if d and self.timeout_keep_alive_task is not None:  # D: no second timer over one
            cancel_keepalive(self)
        if not (e and queued) or self.transport.is_closing():
            return original(self)
        # E: what the original does when a request is queued, without the
        # timer it would arm (upstream arms it only when none is queued).
        self.server_state.total_requests += 1
        if self.timeout_keep_alive_task is not None:
            cancel_keepalive(self)
        self.flow.resume_reading()
        cycle, app = queued.pop()
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    return on_response_complete
