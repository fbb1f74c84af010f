"""Each bug, reproduced for real: a release's server on 127.0.0.1, a raw client.

For every bug and implementation: on a release that has the bug (BUGS.md)
it must show without the guard and be gone with it, counted over several
connections; on a release with the upstream fix it must not show either
way, and the guard must report "fixed upstream" and patch nothing.
"""

from concurrent.futures import ThreadPoolExecutor

from conftest import has_bug
from harness import WEBSOCKET_UPGRADE, Server, get, post

RUNS = 5
TIMEOUT = 1.0  # --timeout-keep-alive for every server here


def _count(scenario, server, runs=RUNS):
    """How many of ``runs`` concurrent connections showed the bug."""
    with ThreadPoolExecutor(max_workers=runs) as pool:
        return sum(pool.map(lambda _: bool(scenario(server)), range(runs)))


def _fix_state(server, fix, http):
    for status in server.guard["fixes"]:
        if status["fix"] == fix and status["implementation"] == http:
            return status["state"]
    raise AssertionError("no status for {} {}".format(fix, http))


def _check(bug, http, scenario, guards=("all",), ws="none", runs=RUNS, count=_count):
    with Server(http=http, timeout_keep_alive=TIMEOUT, ws=ws) as server:
        unguarded = count(scenario, server, runs)
        unguarded_log = server.log()
    for guard in guards:
        with Server(http=http, guard=guard, timeout_keep_alive=TIMEOUT, ws=ws) as server:
            guarded = count(scenario, server, runs)
            state = _fix_state(server, bug, http)
            log = server.log()
        if has_bug(bug, http):
            assert state == "applied", log
            assert unguarded == runs, "bug {} did not reproduce unguarded: {}/{}\n{}".format(
                bug, unguarded, runs, unguarded_log
            )
            assert guarded == 0, "bug {} with guard {!r}: {}/{}\n{}".format(
                bug, guard, guarded, runs, log
            )
        else:
            assert state in ("fixed upstream", "not applicable"), log
            assert (unguarded, guarded) == (0, 0), log


def _c_post_body_hangs(server):
    """GET with a lingering disconnect listener, then a POST on the same connection."""
    with server.client() as client:
        client.send(get("/listen"))
        first = client.read_response(timeout=5)
        assert first is not None and first.body == b"listening"
        client.send(post("/echo?s=0.1", b"payload"))
        second = client.read_response(timeout=2)
        return second is None or b"payload" not in second.body


def test_c_shared_message_event(http):
    _check("C", http, _c_post_body_hangs, guards=("all", "C"))


def _c_pipelined_body_signal_eaten(server):
    """Two pipelined requests that both read their (empty) body."""
    with server.client() as client:
        client.send(get("/echo") + get("/echo"))
        first = client.read_response(timeout=5)
        assert first is not None
        return client.read_response(timeout=TIMEOUT * 2) is None


def test_c_pipelined_body_signal_httptools():
    """httptools parses a queued request at once: request 1 eats its end-of-body signal."""
    _check("C", "httptools", _c_pipelined_body_signal_eaten, guards=("all", "C"))


def _d_closed_early(server):
    """Two pipelined requests; the second ends 0.6 s after its first chunk.

    Correct: the connection closes ``TIMEOUT`` after the second response.
    With the leaked first timer it closes ``TIMEOUT - 0.6`` after it.
    """
    with server.client() as client:
        client.send(get("/") + get("/chunks?s=0.6"))
        first, second = client.read_response(), client.read_response()
        assert first is not None and second is not None and second.body == b"first,last"
        closed_after = client.wait_closed(timeout=TIMEOUT + 2)
        assert closed_after is not None, "keep-alive timeout never closed the connection"
        return closed_after < TIMEOUT * 0.7


def test_d_stacked_timers(http):
    _check("D", http, _d_closed_early, guards=("all", "D"))


def _e_second_response_lost(server):
    """Two pipelined GETs; the second takes longer than the keep-alive timeout."""
    with server.client() as client:
        client.send(get("/") + get("/sleep?s={}".format(TIMEOUT * 1.6)))
        first = client.read_response(timeout=5)
        second = client.read_response(timeout=TIMEOUT * 1.6 + 3)
        return first is None or second is None or second.body != b"slept"


def test_e_timer_during_request(http):
    _check("E", http, _e_second_response_lost, guards=("all", "E"))


def _e2_websocket_behind_request(server):
    """A plain GET and a WebSocket upgrade pipelined; stay connected past the timeout."""
    with server.client() as client:
        client.send(get("/") + WEBSOCKET_UPGRADE)
        first = client.read_response(timeout=5)
        upgraded = client.read_response(timeout=5)
        assert first is not None and upgraded is not None and upgraded.status == 101
        assert client.wait_closed(timeout=TIMEOUT * 1.8) is None, "WebSocket closed by the server"


def _count_timer_tracebacks(scenario, server, runs):
    """Connections whose keep-alive timer raised: counted in the server log."""
    _count(scenario, server, runs)
    return server.log().count("Exception in callback H11Protocol.timeout_keep_alive_handler")


def test_e2_timer_across_upgrade(http):
    if http == "httptools":
        with Server(http=http, guard="all", ws="wsproto") as server:
            assert _fix_state(server, "E2", http) == "not applicable"
        return
    _check(
        "E2",
        http,
        _e2_websocket_behind_request,
        guards=("all", "E2"),
        ws="wsproto",
        count=_count_timer_tracebacks,
    )
