"""Each bug, as a reproduction over real sockets (BUGS.md, "How each one shows itself").

A scenario drives one connection to a server of the installed uvicorn and
says whether the bug showed on it; ``Scenario.count`` runs several such
connections at once and counts.  Used by ``keepalive-guard verify`` and by
the project's tests, which add their own expectations.
"""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from .client import WEBSOCKET_UPGRADE, get, post, websocket_frame

#: --timeout-keep-alive of every server a scenario runs against (seconds).
TIMEOUT = 1.0
RUNS = 5


class Scenario(object):
    """One way to make a bug show; ``connection(server)`` is True if it did."""

    def __init__(
        self,
        bug,
        name,
        connection,
        implementations=("h11", "httptools"),
        ws=False,
        log_marker=None,
        concurrent=True,
        unobservable=None,
    ):
        self.bug = bug
        self.name = name
        self.connection = connection
        self.implementations = implementations
        self.ws = ws
        self.log_marker = log_marker
        self.concurrent = concurrent
        #: (implementation, loop) -> why the bug cannot be seen there
        self.unobservable = unobservable or {}
        self.doc = (connection.__doc__ or "").strip().splitlines()[0]

    def count(self, server, runs=RUNS):
        """How many of ``runs`` concurrent connections showed the bug.

        With ``log_marker`` (a compiled pattern) the bug shows in the server's
        log, not on the wire: the count is the number of new matches.  Not
        ``concurrent``: one connection after another (a connection that
        reads the log itself can then tell its own lines).
        """
        before = self._logged(server)
        with ThreadPoolExecutor(max_workers=runs if self.concurrent else 1) as pool:
            showed = sum(pool.map(lambda _: bool(self.connection(server)), range(runs)))
        return self._logged(server) - before if self.log_marker else showed

    def _logged(self, server):
        return len(self.log_marker.findall(server.log())) if self.log_marker else 0


#: h11: "Exception in callback ..._call_connection_lost" (LocalProtocolError);
#: httptools: asyncio's warning for writes to a closed transport.
EARLY_DISCONNECT_ERRORS = re.compile(
    r"Exception in callback [^\n]*connection_lost|socket\.send\(\) raised exception"
)


def _poll(server, path, done, timeout):
    """GET ``path`` on a new connection until ``done(record)`` or ``timeout``; the last record."""
    deadline = time.monotonic() + timeout
    with server.client() as probe:
        while True:
            probe.send(get(path))
            answer = probe.read_response(timeout=5)
            assert answer is not None, "GET {} failed".format(path)
            record = json.loads(answer.body.decode())
            if done(record) or time.monotonic() > deadline:
                return record
            time.sleep(0.05)


def a_disconnect_mid_response(server):
    """A: the client leaves in the middle of a streamed response; the server logs errors."""
    token = os.urandom(8).hex()
    before = len(EARLY_DISCONNECT_ERRORS.findall(server.log()))
    with server.client() as client:
        client.send(get("/drip?s=0.02&token=" + token))
        head = client.read_head(timeout=5)
        assert head is not None and b" 200 " in head, "GET /drip failed"
    done = "verify: /drip {} done".format(token)  # the app has sent (or tried) every chunk
    deadline = time.monotonic() + 5
    while done not in server.log():
        assert time.monotonic() < deadline, "GET /drip never finished"
        time.sleep(0.05)
    return len(EARLY_DISCONNECT_ERRORS.findall(server.log())) > before


def b_receive_after_response_waits(server):
    """B: receive() called after the response returns only when the keep-alive close happens."""
    token = os.urandom(8).hex()
    with server.client() as client:
        client.send(get("/after?token=" + token))
        response = client.read_response(timeout=5)
        assert response is not None and response.body == b"after", "GET /after failed"
        client.wait_closed(timeout=TIMEOUT * 3)  # idle on keep-alive (0.2.x: never closes)
    record = _poll(server, "/listening?token=" + token, lambda r: "told" in r, TIMEOUT * 3)
    return "told" not in record or record["told"] - record["sent"] > TIMEOUT / 2


def c_post_body_hangs(server):
    """C: GET with a lingering disconnect listener, then a POST's body read hangs."""
    with server.client() as client:
        client.send(get("/listen"))
        first = client.read_response(timeout=5)
        assert first is not None and first.body == b"listening", "GET /listen failed"
        client.send(post("/echo?s=0.1", b"payload"))
        second = client.read_response(timeout=2)
        return second is None or b"payload" not in second.body


def c_pipelined_body_signal_eaten(server):
    """C: two pipelined requests reading their bodies; request 1 eats request 2's signal."""
    with server.client() as client:
        client.send(get("/echo") + get("/echo"))
        first = client.read_response(timeout=5)
        assert first is not None, "first pipelined response missing"
        return client.read_response(timeout=TIMEOUT * 2) is None


def c_pipelined_listener_not_told(server):
    """C: a request pipelined behind another keeps a receive() waiting after its response.

    Upstream sets each request's event when its response completes, so a
    disconnect listener returns at once; with the event shared, it waits
    until something else sets it (here the keep-alive close, TIMEOUT later).
    """
    token = os.urandom(8).hex()
    with server.client() as client:
        client.send(get("/sleep?s=0") + get("/listen?token=" + token) + get("/sleep?s=0"))
        responses = [client.read_response(timeout=5) for _ in range(3)]
        assert all(r is not None for r in responses), "pipelined responses missing"
        record = _poll(server, "/listening?token=" + token, lambda r: "told" in r, TIMEOUT * 3)
    return "told" not in record or record["told"] - record["sent"] > TIMEOUT / 2


def d_closed_early(server):
    """D: two pipelined requests; the leaked first timer closes the connection early.

    The second request ends 0.6 s after its first chunk.  Correct: the
    connection closes TIMEOUT after the second response; with the leaked
    first timer it closes TIMEOUT - 0.6 after it.
    """
    with server.client() as client:
        client.send(get("/") + get("/chunks?s=0.6"))
        first, second = client.read_response(), client.read_response()
        assert first is not None and second is not None and second.body == b"first,last", (
            "pipelined responses missing"
        )
        closed_after = client.wait_closed(timeout=TIMEOUT + 2)
        assert closed_after is not None, "keep-alive timeout never closed the connection"
        return closed_after < TIMEOUT * 0.7


def e_second_response_lost(server):
    """E: two pipelined GETs, the second slower than the keep-alive timeout; it is lost."""
    with server.client() as client:
        client.send(get("/") + get("/sleep?s={}".format(TIMEOUT * 1.6)))
        first = client.read_response(timeout=5)
        second = client.read_response(timeout=TIMEOUT * 1.6 + 3)
        return first is None or second is None or second.body != b"slept"


#: asyncio logs "Exception in callback H11Protocol.timeout_keep_alive_handler()",
#: uvloop "Exception in callback <bound method H11Protocol.timeout_keep_alive_handler ...".
TIMER_TRACEBACK = re.compile(
    r"Exception in callback [^\n]*?H11Protocol\.timeout_keep_alive_handler"
)


def e2_websocket_behind_request(server):
    """E2: a GET and a WebSocket upgrade pipelined; the HTTP timer fires on the WebSocket."""
    with server.client() as client:
        client.send(get("/") + WEBSOCKET_UPGRADE)
        first = client.read_response(timeout=5)
        upgraded = client.read_response(timeout=5)
        assert first is not None and upgraded is not None and upgraded.status == 101, (
            "WebSocket upgrade failed"
        )
        assert client.wait_closed(timeout=TIMEOUT * 1.8) is None, "WebSocket closed by the server"
    return False  # counted in the log


def r1_running_request_not_told(server):
    """R1: a request waits in receive() with another queued behind it; the client leaves.

    h11 (and a fixed httptools) tell the waiting request at once; broken,
    it waits until the app gives up (here 3 s).
    """
    token = os.urandom(8).hex()
    with server.client() as client:
        client.send(get("/hold?s=3&token=" + token) + get("/"))
        waiting = _poll(server, "/held?token=" + token, lambda r: "waiting" in r, 5)
        assert "waiting" in waiting, "/hold never started"
    record = _poll(server, "/held?token=" + token, lambda r: "got" in r, 1.0)
    return "told" not in record or record["told"] - record["waiting"] > 1.5


def r2_upgrade_answered_first(server):
    """R2: a slow GET and a WebSocket upgrade pipelined; the 101 comes first, or the
    HTTP keep-alive timer closes the WebSocket."""
    with server.client() as client:
        client.send(get("/sleep?s=0.5") + WEBSOCKET_UPGRADE)
        first = client.read_response(timeout=5)
        assert first is not None, "no response"
        if first.status != 200:
            return True
        upgraded = client.read_response(timeout=5)
        assert upgraded is not None and upgraded.status == 101, "WebSocket upgrade failed"
        if client.wait_closed(timeout=TIMEOUT * 1.8) is not None:
            return True
        client.send(websocket_frame(b"still open"))
        return client.read_frame(timeout=5) != (0x1, b"still open")


def r3_idle_after_late_body(server):
    """R3: answered before its body arrived; once the rest arrives, no timer closes it."""
    body = b"0123456789" * 2
    request = post("/early", body)
    with server.client() as client:
        client.send(request[:-10])
        response = client.read_response(timeout=5)
        assert response is not None and response.body == b"early", "POST /early failed"
        client.send(request[-10:])
        closed_after = client.wait_closed(timeout=TIMEOUT * 3)
        return closed_after is None or closed_after > TIMEOUT * 1.5


def r4_idle_without_request(server):
    """R4: a connection that sends nothing is never closed."""
    with server.client() as client:
        closed_after = client.wait_closed(timeout=TIMEOUT * 3)
        return closed_after is None or closed_after > TIMEOUT * 1.5


def r5_protocol_kept_after_reset(server):
    """R5: after a reset, the armed timer keeps the protocol, cycle and scope alive."""
    token = os.urandom(8).hex()
    client = server.client()
    try:
        client.send(get("/probe?token=" + token))
        response = client.read_response(timeout=5)
        assert response is not None and response.body == b"probed", "GET /probe failed"
    finally:
        client.reset()
    time.sleep(TIMEOUT * 0.3)
    record = _poll(server, "/probes?token=" + token, lambda r: True, 0)
    return record["alive"] > 0


SCENARIOS = (
    Scenario(
        "A",
        "disconnect mid-response",
        a_disconnect_mid_response,
        concurrent=False,
        unobservable={
            ("httptools", "uvloop"): "uvloop does not report writes to a closed transport, "
            "so A cannot be seen on httptools there (its h11 traceback is seen)"
        },
    ),
    Scenario("B", "receive() after the response", b_receive_after_response_waits),
    Scenario("C", "lingering receive()", c_post_body_hangs),
    Scenario(
        "C", "pipelined body signal", c_pipelined_body_signal_eaten, implementations=("httptools",)
    ),
    Scenario(
        "C",
        "pipelined listener",
        c_pipelined_listener_not_told,
        implementations=("httptools",),
    ),
    Scenario("D", "stacked timers", d_closed_early),
    Scenario("E", "timer during request", e_second_response_lost),
    Scenario(
        "E2",
        "timer across upgrade",
        e2_websocket_behind_request,
        implementations=("h11",),
        ws=True,
        log_marker=TIMER_TRACEBACK,
    ),
    Scenario(
        "R1",
        "disconnect behind a queue",
        r1_running_request_not_told,
        implementations=("httptools",),
    ),
    Scenario(
        "R2",
        "upgrade behind a request",
        r2_upgrade_answered_first,
        implementations=("httptools",),
        ws=True,
    ),
    Scenario("R3", "body after the response", r3_idle_after_late_body),
    Scenario("R4", "no request at all", r4_idle_without_request),
    Scenario("R5", "timer after a reset", r5_protocol_kept_after_reset),
)


def scenarios_for(bug, implementation):
    return [s for s in SCENARIOS if s.bug == bug and implementation in s.implementations]
