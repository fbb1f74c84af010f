"""Each bug, reproduced for real: a release's server on 127.0.0.1, a raw client.

For every scenario and implementation: on a release that has the bug
(BUGS.md, via conftest.has_bug) it must show on every connection without the
guard and on none with it, both with every fix and with that fix alone; on a
release with the upstream fix it must show on none either way, and the
guard must say "fixed upstream" (or "not applicable") and patch nothing; on
a release older than the bug the guard must say "not applicable".
"Every fix" is ``all``, plus R4 for R4's own scenario (it is opt-in); that
``all`` leaves R4 off is a test of its own.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import FIRST_BROKEN, IMPLEMENTATIONS, OPT_IN, has_bug, uvicorn_version
from harness import Server
from packaging.version import Version

from keepalive_guard.verify.scenarios import RUNS, SCENARIOS, TIMEOUT

CASES = [
    pytest.param(
        scenario, http, id="{}-{}-{}".format(scenario.bug, scenario.name.replace(" ", "_"), http)
    )
    for scenario in SCENARIOS
    for http in IMPLEMENTATIONS
    if http in scenario.implementations
]


def _fix_state(guard_status, fix, http):
    for status in guard_status["fixes"]:
        if status["fix"] == fix and status["implementation"] == http:
            return status["state"]
    raise AssertionError("no status for {} {}".format(fix, http))


def _server(http, scenario, guard="none"):
    ws = "wsproto" if scenario.ws else "none"
    return Server(http=http, guard=guard, timeout_keep_alive=TIMEOUT, ws=ws)


def _run(http, scenario, guard):
    """(connections that showed the bug, the guard's state for it, server log)."""
    with _server(http, scenario, guard) as server:
        count = scenario.count(server)
        return count, server.guard, server.log()


@pytest.mark.parametrize("scenario, http", CASES)
def test_bug(scenario, http):
    bug = scenario.bug
    if uvicorn_version() < Version(FIRST_BROKEN[bug]):
        # The code the bug lives in came later (no keep-alive timer or shared
        # message_event before 0.2.21): what the scenario measures is something
        # else here (0.2.x's h11 serves no pipelined request); the guard must
        # say "not applicable" and the scenario is not run.
        for guard in ("all,{}".format(bug) if bug in OPT_IN else "all", bug):
            with _server(http, scenario, guard) as server:
                assert _fix_state(server.guard, bug, http) == "not applicable", server.guard
        return
    guards = ("none", "all,{}".format(bug) if bug in OPT_IN else "all", bug)
    # The three servers run at once: each is independent and mostly waits on timers.
    with ThreadPoolExecutor(max_workers=len(guards)) as pool:
        (unguarded, _, unguarded_log), *guarded_runs = pool.map(
            lambda guard: _run(http, scenario, guard), guards
        )
    assert unguarded == (RUNS if has_bug(bug, http) else 0), (
        "{} without the guard: {}/{} connections showed it\n{}".format(
            bug, unguarded, RUNS, unguarded_log
        )
    )
    for guard, (guarded, status, log) in zip(guards[1:], guarded_runs):
        state = _fix_state(status, bug, http)
        assert guarded == 0, "{} with guard {!r}: {}/{}\n{}".format(bug, guard, guarded, RUNS, log)
        if has_bug(bug, http):
            assert state == "applied", log
        else:
            assert state in ("fixed upstream", "not applicable"), log


def test_e2_not_applicable_to_httptools():
    if "httptools" not in IMPLEMENTATIONS:
        pytest.fail("httptools must be installed in the test environment")
    with Server(http="httptools", guard="all") as server:
        assert _fix_state(server.guard, "E2", "httptools") == "not applicable"


def test_r1_r2_not_applicable_to_h11():
    with Server(http="h11", guard="all") as server:
        for fix in ("R1", "R2"):
            assert _fix_state(server.guard, fix, "h11") == "not applicable"


@pytest.mark.parametrize("http", IMPLEMENTATIONS)
def test_r4_is_opt_in(http):
    """``all`` leaves R4 off: a connection that sends nothing stays open, as upstream."""
    (scenario,) = [s for s in SCENARIOS if s.bug == "R4"]
    count, status, log = _run(http, scenario, "all")
    assert _fix_state(status, "R4", http) == "disabled", log
    # before 0.2.21 (FIRST_BROKEN) no keep-alive timer closes any idle connection
    no_timer = uvicorn_version() < Version(FIRST_BROKEN["R4"])
    assert count == (RUNS if has_bug("R4", http) or no_timer else 0), log
