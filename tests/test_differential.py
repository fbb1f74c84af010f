"""Ordinary traffic: byte-identical with and without the guard.

For each implementation, one unguarded and one guarded (every fix, R4 too) server of
the installed release get exactly the same bytes from a raw client; every
byte each server sends back, up to the moment it closes the connection, is
recorded, and the two streams must be identical once the ``date`` header
lines are removed.  All cases run concurrently against both servers, so the
keep-alive closes (``TIMEOUT`` after the last response) overlap.  Releases
before 0.2.21 have no keep-alive timer (the client closes instead) and their
h11 serves no pipelined request: there the statuses must match the unguarded
server's, as the bytes must.
"""

import difflib
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import FIRST_BROKEN, has_bug, uvicorn_version
from harness import WEBSOCKET_UPGRADE, Client, Server, get, post
from packaging.version import Version

from keepalive_guard.verify.client import websocket_close, websocket_frame

TIMEOUT = 2.0  # --timeout-keep-alive: generous, so no timer bug can fire on these fast cases
CASE_TIMEOUT = 8.0  # per case, for its responses
CLOSE_TIMEOUT = TIMEOUT + 8.0  # for the server's keep-alive close afterwards
HOST = b"Host: 127.0.0.1\r\n"
KEEPALIVE_TIMER = uvicorn_version() >= Version(FIRST_BROKEN["D"])  # from 0.2.21
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # in a failure's repr: differs between servers


#: Releases before this one may not complete a WebSocket exchange themselves (0.2.x has
#: no --ws wsproto; 0.3.26 with its wsproto never answers the client's close frame);
#: from it on (the default cells' 0.11.0 and newer) an unguarded server must complete them.
WEBSOCKET_TRUSTED = Version("0.11.0")


def _websocket_gap(results, name):
    """Why this release's own server is no reference for WebSocket case ``name``, or None."""
    plain = results[name, "plain"]
    if not name.startswith("websocket_") or not isinstance(plain, Exception):
        return None
    if uvicorn_version() >= WEBSOCKET_TRUSTED:
        return None
    import wsproto

    return "uvicorn {} (--ws wsproto, wsproto {}) fails it itself: {}".format(
        uvicorn_version(), getattr(wsproto, "__version__", "?"), ADDRESS.sub("", repr(plain))
    )


class RecordingClient(Client):
    """A harness client that also keeps every byte received, parsed or not."""

    def __init__(self, port, timeout=5.0):
        Client.__init__(self, port, timeout)
        self.transcript = b""

    def _fill(self, deadline):
        before = len(self.buf)
        more = Client._fill(self, deadline)
        if more:
            self.transcript += self.buf[before:]
        return more


def _read(client, count, deadline, head=()):
    """Up to ``count`` responses (``head``: indexes of HEAD requests); stops at a missing one."""
    responses = []
    for index in range(count):
        response = client.read_response(
            timeout=max(deadline - time.monotonic(), 0.01), head_request=index in head
        )
        responses.append(response)
        if response is None:
            break
    return responses


def _head(path):
    return b"HEAD " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n"


CASES = OrderedDict()


def case(responses):
    """Register a case: ``run(client, deadline)`` returns the responses it read."""

    def register(run):
        CASES[run.__name__] = (run, responses)
        return run

    return register


@case(1)
def plain_get(client, deadline):
    client.send(get("/"))
    return _read(client, 1, deadline)


@case(1)
def post_with_body(client, deadline):
    client.send(post("/echo?x=1", b"a body with some bytes", b"Content-Type: text/plain\r\n"))
    return _read(client, 1, deadline)


@case(1)
def chunked_request_body(client, deadline):
    client.send(b"POST /echo HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    for piece in (b"5\r\nhello\r\n", b"7\r\n, world\r\n", b"0\r\n\r\n"):
        time.sleep(0.05)
        client.send(piece)
    return _read(client, 1, deadline)


@case(1)
def connection_close(client, deadline):
    client.send(post("/echo", b"bye", b"Connection: close\r\n"))
    return _read(client, 1, deadline)


@case(1)
def http_1_0(client, deadline):
    client.send(b"GET /echo?v=10 HTTP/1.0\r\n" + HOST + b"\r\n")
    return _read(client, 1, deadline)


@case(1)
def expect_100_continue(client, deadline):
    body = b'{"x": 1}'
    client.send(
        b"POST /echo HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = client._read_until(b"\r\n\r\n", deadline)
    assert interim is not None and interim.startswith(b"HTTP/1.1 100 "), interim
    client.send(body)
    return _read(client, 1, deadline)


@case(5)
def pipelined_batch(client, deadline):
    """Five mixed requests in one write; only the first reads its body.

    (Later pipelined requests that read their bodies hang on httptools
    releases with bug C: see ``pipelined_batch_reading_bodies``.)
    """
    client.send(
        post("/echo", b"first")
        + get("/sleep?s=0")
        + _head("/sleep?s=0")
        + get("/chunks?s=0")
        + get("/sleep?s=0&last=1", b"Accept: */*\r\nConnection: keep-alive\r\n")
    )
    return _read(client, 5, deadline, head=(2,))


@case(5)
def pipelined_batch_reading_bodies(client, deadline):
    client.send(
        get("/") + post("/echo", b"second") + _head("/") + get("/stream") + get("/no/such/path")
    )
    return _read(client, 5, deadline, head=(2,))


@case(2)
def pipelined_body_arriving_later(client, deadline):
    """A POST queued behind a request, its body arriving in two parts later.

    (The queued request gets no body signal before it starts; on httptools
    with bug C its first signal may go to the request before it.)
    """
    body = b"a body sent in two parts"
    request = post("/echo", body)
    client.send(get("/echo") + request[: -len(body) + 4])
    time.sleep(0.2)
    client.send(request[-len(body) + 4 :])
    return _read(client, 2, deadline)


@case(1)
def pipelined_partial_next(client, deadline):
    """A request and the first bytes of a next one that never completes.

    The keep-alive timer armed when the response completes must still close
    the connection (on h11 the guard arms it after finding no request)."""
    client.send(get("/") + get("/next")[:12])
    return _read(client, 1, deadline)


@case(None)  # the second request is malformed: 400 on some releases, a bare close on others
def pipelined_malformed_next(client, deadline):
    client.send(get("/") + b"NOT AN HTTP REQUEST\r\n\r\n")
    return _read(client, 2, deadline)


@case(1)
def streaming_response(client, deadline):
    client.send(get("/stream"))
    return _read(client, 1, deadline)


@case(1)
def head_request(client, deadline):
    client.send(_head("/"))
    return _read(client, 1, deadline, head=(0,))


@case(1)
def unknown_path(client, deadline):
    client.send(get("/no/such/path?q=%20x"))
    return _read(client, 1, deadline)


@case(None)  # some releases answer 400, older ones just close
def malformed_request(client, deadline):
    client.send(b"NOT AN HTTP REQUEST\r\n\r\n")
    return _read(client, 1, deadline)


def _websocket(client, deadline):
    """Upgrade (the request alone in its write), echo twice, close."""
    client.send(WEBSOCKET_UPGRADE)
    upgraded = client.read_response(timeout=max(deadline - time.monotonic(), 0.01))
    assert upgraded is not None and upgraded.status == 101, upgraded
    for text in (b"hello", b"again"):
        client.send(websocket_frame(text))
        assert client.read_frame(timeout=max(deadline - time.monotonic(), 0.01)) == (1, text)
    client.send(websocket_close())
    frame = client.read_frame(timeout=max(deadline - time.monotonic(), 0.01))
    assert frame is not None and frame[0] == 8, frame
    return upgraded


@case(None)  # asserted inside: a 101, two echoes, the close handshake
def websocket_exchange(client, deadline):
    return [_websocket(client, deadline)]


@case(None)
def websocket_after_request(client, deadline):
    """A plain request answered, then an upgrade on the same connection (not pipelined)."""
    client.send(get("/"))
    first = _read(client, 1, deadline)
    assert first[0] is not None and first[0].status == 200, first
    return first + [_websocket(client, deadline)]


def _exchange(port, run):
    with RecordingClient(port, timeout=5.0) as client:
        responses = run(client, time.monotonic() + CASE_TIMEOUT)
        closed = client.wait_closed(timeout=CLOSE_TIMEOUT if KEEPALIVE_TIMER else 1.0) is not None
        return {
            "transcript": client.transcript,
            "statuses": [r.status if r is not None else None for r in responses],
            "closed": closed,
        }


_RESULTS = {}


def _results(http):
    """Every case against an unguarded and a guarded server, concurrently (cached per impl)."""
    if http not in _RESULTS:
        with Server(http=http, timeout_keep_alive=TIMEOUT, ws="wsproto") as plain, Server(
            http=http, guard="all,R4", timeout_keep_alive=TIMEOUT, ws="wsproto"
        ) as guarded:
            jobs = [
                (name, label, port, run)
                for name, (run, _) in CASES.items()
                for label, port in (("plain", plain.port), ("guarded", guarded.port))
            ]
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                futures = [
                    (name, label, pool.submit(_exchange, port, run))
                    for name, label, port, run in jobs
                ]
                results = {}
                for name, label, future in futures:
                    try:
                        results[name, label] = future.result(
                            timeout=CASE_TIMEOUT + CLOSE_TIMEOUT + 10
                        )
                    except Exception as exc:  # reported by the test of that case
                        results[name, label] = exc
            logs = {"plain": plain.log(), "guarded": guarded.log()}
            guard = guarded.guard
        _RESULTS[http] = (results, logs, guard)
    return _RESULTS[http]


_DATE = re.compile(rb"\r\ndate: [^\r\n]*", re.IGNORECASE)


def _normalise(transcript):
    return _DATE.sub(b"", transcript)


def _diff(a, b):
    lines = difflib.unified_diff(
        a.decode("latin-1").split("\r\n"),
        b.decode("latin-1").split("\r\n"),
        "unguarded",
        "guarded",
        lineterm="",
    )
    return "\n".join(lines)


def _get(results, logs, name, label):
    result = results[name, label]
    if isinstance(result, Exception):
        raise AssertionError(
            "{} ({}) failed: {!r}\n{} log:\n{}".format(name, label, result, label, logs[label])
        )
    return result


def _failure(results, name, label):
    return ADDRESS.sub("", repr(results[name, label]))


@pytest.mark.parametrize("name", list(CASES))
def test_identical_bytes(http, name):
    results, logs, guard = _results(http)
    assert guard is not None and guard["installed"], guard
    if not KEEPALIVE_TIMER and isinstance(results[name, "plain"], Exception):
        # 0.2.x cannot serve this case (no 100-continue, no h11 pipelining):
        # the guarded server must fail it the same way.
        assert _failure(results, name, "guarded") == _failure(results, name, "plain"), logs
        if _websocket_gap(results, name):
            pytest.skip(_websocket_gap(results, name))
        return
    if _websocket_gap(results, name):
        # the release's own server does not complete it: the guarded one fails alike
        assert _failure(results, name, "guarded") == _failure(results, name, "plain"), logs
        pytest.skip(_websocket_gap(results, name))
    plain = _get(results, logs, name, "plain")
    guarded = _get(results, logs, name, "guarded")
    count = CASES[name][1]
    if not KEEPALIVE_TIMER:
        assert guarded["statuses"] == plain["statuses"], (plain, guarded, logs["guarded"])
        a, b = _normalise(plain["transcript"]), _normalise(guarded["transcript"])
        assert a.count(b"HTTP/1.") >= len([x for x in plain["statuses"] if x]), a
        assert a == b, _diff(a, b)
        return
    if count is not None:
        assert guarded["statuses"] == [200] * count, (guarded, logs["guarded"])
    assert guarded["closed"], "the guarded server never closed the connection"
    if name == "pipelined_batch_reading_bodies" and http == "httptools" and has_bug("C", http):
        # Without the guard this release loses every pipelined request after the
        # first that reads its body (bug C); with it they are all answered.
        assert plain["statuses"][:1] == [200] and None in plain["statuses"], plain
        return
    if name == "pipelined_body_arriving_later" and http == "httptools" and has_bug("C", http):
        # Unguarded, whether the queued POST is answered depends on timing (bug C).
        assert b"a body sent in two parts" in guarded["transcript"], guarded
        return
    if count is not None:
        assert plain["statuses"] == [200] * count, (plain, logs["plain"])
    assert plain["closed"], "the unguarded server never closed the connection"
    a, b = _normalise(plain["transcript"]), _normalise(guarded["transcript"])
    assert a.count(b"HTTP/1.") >= (count or 0)
    assert a == b, _diff(a, b)
