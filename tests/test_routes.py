"""Every way a user switches the guard on, each exercised for real.

Real ``python -m uvicorn`` processes (plain, ``--workers 2``, ``--reload``), a
real gunicorn master with its workers, the ``keepalive-guard run`` wrapper and
the zero-code ``KEEPALIVE_GUARD=1`` start-up hook, all on 127.0.0.1 with free
ports, against whatever uvicorn release this environment has.  Subprocesses
run from a temporary directory, so that the INSTALLED keepalive-guard (and its
``keepalive_guard.pth``) is what they import, never the source tree.

The behavioural proof that a server is guarded is bug E's scenario (two
pipelined GETs, the second slower than the 1 s keep-alive timeout): on a
release with E (``conftest.has_bug``) an unguarded server loses the second
response on every connection and a guarded one on none.  Releases without E
but with E2 (0.27.1-0.52.4, h11 only) use E2's scenario (``--ws wsproto``);
where the implementation a route serves with has neither, and on 0.53.0+,
only the decisions and the patch state (``/_guard``) are checked.  Every
server's keep-alive timeout is measured too (about 1 s), so that a server
started with another timeout cannot pass the proof vacuously.

Independent servers of one route start and run at once (one module-scoped
fixture per route), and the parametrized tests assert on what they saw.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import (
    APP,
    FIRST_FIXED,
    GUNICORN_BROKEN,
    HAS_CHILDREN,
    HAS_CONFIG,
    HAS_TIMER,
    IMPLEMENTATIONS,
    NO_CHILDREN,
    NO_CONFIG,
    NO_GUNICORN,
    OPT_IN,
    UVICORN,
    any_bug,
    has_bug,
    protocol_module,
    uvicorn_argv,
    uvicorn_version,
)
from conftest import (
    expected_state as _expected_state,
)
from harness import Server
from packaging.version import Version
from routes_support import (
    CommandServer,
    Process,
    loop_usable,
    python_script,
    read_line,
    run_command,
    run_probes,
    worker_path,
    worker_setting,
)

from keepalive_guard.verify.scenarios import SCENARIOS, TIMEOUT

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIXES = tuple(FIRST_FIXED)
NAMES = ("guarded", "guarded-h11", "guarded-httptools")
CLASSES = ("H11Protocol", "HttpToolsProtocol", "AutoHTTPProtocol")
CLASS_IMPL = {"H11Protocol": "h11", "HttpToolsProtocol": "httptools"}
#: uvicorn's "auto": httptools when it is importable
AUTO = "httptools" if "httptools" in IMPLEMENTATIONS else "h11"
NAME_IMPL = {"guarded": AUTO, "guarded-h11": "h11", "guarded-httptools": "httptools"}
E_SCENARIO = next(s for s in SCENARIOS if s.bug == "E")
E2_SCENARIO = next(s for s in SCENARIOS if s.bug == "E2")
HAVE_PROC = os.path.exists("/proc/self/environ")
RUNS = 5
MANY_RUNS = 8  # several workers: enough connections to land on each of them
#: request sent to idle connection closed: at least TIMEOUT (1 s), and told apart
#: from gunicorn's default keep-alive (2 s) and uvicorn's (5 s)
KEEPALIVE_RANGE = (TIMEOUT * 0.95, TIMEOUT + 0.95)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ---------------------------------------------------------------------------
# the oracle (conftest.has_bug, straight from BUGS.md)


def proof(impl):
    """The scenario whose bug an unguarded ``impl`` server of this release shows, or None
    (E first, then E2, then B and A on the releases before 0.3.27)."""
    for scenario in [E_SCENARIO, E2_SCENARIO] + [s for s in SCENARIOS if s.bug in ("B", "A")]:
        if impl in scenario.implementations and has_bug(scenario.bug, impl):
            return scenario
    return None


def expected_state(fix, impl):
    """The state of ``fix`` on ``impl`` under the default selection."""
    return "disabled" if fix in OPT_IN else _expected_state(fix, impl)


def state_errors(fixes, impls):
    """Decisions (FixStatus dicts) that disagree with the oracle, as text."""
    seen, errors = set(), []
    for status in fixes:
        if status["implementation"] not in impls:
            continue
        seen.add((status["fix"], status["implementation"]))
        want = expected_state(status["fix"], status["implementation"])
        if status["state"] != want:
            errors.append(
                "{} ({}): {} ({}), expected {}".format(
                    status["fix"], status["implementation"], status["state"], status["reason"], want
                )
            )
    missing = {(f, i) for f in FIXES for i in impls} - seen
    if missing:
        errors.append("no decision for {}".format(sorted(missing)))
    return errors


#: the implementation the zero-code routes serve with: uvicorn's default if a
#: bug shows there, else h11 if one shows there (E2 on 0.27.1-0.52.4)
ROUTE_IMPL = AUTO if proof(AUTO) or not proof("h11") else "h11"


# ---------------------------------------------------------------------------
# commands and environments


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """cwd of every subprocess: not the project, whose source tree would shadow the wheel."""
    return str(tmp_path_factory.mktemp("routes-cwd"))


def clean_env(**extra):
    env = dict(os.environ)
    for name in (
        "KEEPALIVE_GUARD",
        "KEEPALIVE_GUARD_FIXES",
        "KEEPALIVE_GUARD_STRICT",
        "PYTHONPATH",
    ):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def ws_args(scenario):
    return ["--ws", "wsproto"] if scenario is E2_SCENARIO else []


def wrapper_argv(*extra):
    inner = uvicorn_argv(*extra)
    return lambda port: [python_script("keepalive-guard"), "run", "--"] + inner(port)


def cli_server(name, argv, workdir, **env):
    return lambda: CommandServer(argv, env=clean_env(**env), cwd=workdir, name=name)


def describe(result):
    return "\n".join(
        [
            "error: {}".format(result.get("error")),
            "states: {}".format(json.dumps(result.get("states"), sort_keys=True, default=str)),
            "keepalive: {}, count: {}".format(result.get("keepalive"), result.get("count")),
            "stderr:\n{}".format(result.get("log", "")[-6000:]),
            "stdout:\n{}".format(result.get("stdout", "")[-2000:]),
        ]
    )


# ---------------------------------------------------------------------------
# common assertions


def assert_ran(result, want_pids=1):
    info = describe(result)
    assert result.get("error") is None, info
    assert len(result["states"]) >= want_pids, "expected {} serving PIDs\n{}".format(
        want_pids, info
    )
    low, high = KEEPALIVE_RANGE
    if not HAS_TIMER:  # 0.2.0-0.2.20: no keep-alive timer, connections stay open
        assert result["keepalive"] is None, info
        return
    assert result["keepalive"] is not None and low <= result["keepalive"] < high, (
        "keep-alive timeout is not {} s, so the proof would mean nothing\n{}".format(TIMEOUT, info)
    )


def assert_proof(result, scenario, guarded, count_key="count"):
    """Guarded: the bug on no connection; unguarded: on every one."""
    if scenario is None:
        assert result[count_key] is None
        return
    want = 0 if guarded else result["runs"]
    assert result[count_key] == want, "{} {}: {}/{} connections showed it\n{}".format(
        "guarded" if guarded else "unguarded",
        scenario.bug,
        result[count_key],
        result["runs"],
        describe(result),
    )


def assert_class_route(states, result):
    """A guarded protocol class serves: uvicorn's own classes untouched."""
    for pid, state in states.items():
        assert state["guarded_classes_loaded"], describe(result)
        assert not any(state["uvicorn_classes_patched"].values()), (
            "uvicorn's classes were patched in {}\n{}".format(pid, describe(result))
        )


def assert_install_route(states, result, impl, installed=True):
    """install() ran (or not) in every serving process: uvicorn's classes patched where a bug is.

    On 0.53.0+ nothing is patched either way; what shows there is that every
    serving process has KEEPALIVE_GUARD=1 (read from /proc), under which the
    start-up hook installs the guard (test_zero_code_decisions).
    """
    for pid, state in states.items():
        if HAVE_PROC:
            want_env = "1" if installed else None
            assert state.get("environ") == want_env, "{}: KEEPALIVE_GUARD={!r}\n{}".format(
                pid, state.get("environ"), describe(result)
            )
        patched = state["uvicorn_classes_patched"]
        assert {"h11": "H11Protocol", "httptools": "HttpToolsProtocol"}[impl] in patched, describe(
            result
        )
        for cls_name, is_patched in patched.items():
            want = installed and any_bug(CLASS_IMPL[cls_name])
            assert is_patched == want, "{} in {}: patched {}, expected {}\n{}".format(
                cls_name, pid, is_patched, want, describe(result)
            )
        assert not state["guarded_classes_loaded"], describe(result)


# ---------------------------------------------------------------------------
# 1. guarded classes: uvicorn.Config(http=keepalive_guard.protocols.X)


def _class_impl(name):
    return CLASS_IMPL.get(name, AUTO)


@pytest.fixture(scope="module")
def class_results(workdir):
    specs = {}
    for name in CLASSES:
        scenario = proof(_class_impl(name))
        specs[name] = (
            lambda name=name, scenario=scenario: Server(
                http="keepalive_guard.protocols:" + name,
                timeout_keep_alive=TIMEOUT,
                ws="wsproto" if scenario is E2_SCENARIO else "none",
            ),
            {"scenario": scenario, "runs": RUNS},
        )
    for impl in IMPLEMENTATIONS:  # the same serve module without the guard
        scenario = proof(impl)
        if scenario is not None:
            specs["unguarded-" + impl] = (
                lambda impl=impl, scenario=scenario: Server(
                    http=impl,
                    timeout_keep_alive=TIMEOUT,
                    ws="wsproto" if scenario is E2_SCENARIO else "none",
                ),
                {"scenario": scenario, "runs": RUNS},
            )
    # harness.Server starts ``python -m`` in the current directory: make it
    # one where the source tree cannot shadow the installed package
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        return run_probes(specs)
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("name", CLASSES)
def test_guarded_class_in_config(class_results, name):
    """uvicorn.Config(http=<guarded class>): fixed, uvicorn untouched, the class's decisions."""
    result = class_results[name]
    impl = _class_impl(name)
    assert_ran(result)
    assert list(result["states"]) == [result["pid"]], describe(result)
    assert_class_route(result["states"], result)
    assert_proof(result, proof(impl), guarded=True)
    # serve.py reports the serving class's keepalive_guard_status as "fixes";
    # the process-wide guard stays off
    guard = result["guard"]
    assert guard["installed"] is False, guard
    assert {s["implementation"] for s in guard["fixes"]} == {impl}, guard
    assert state_errors(guard["fixes"], [impl]) == [], guard


@pytest.mark.parametrize("name", CLASSES)
def test_guarded_class_decisions(name):
    """Each class's keepalive_guard_status: applied exactly where this release has the bug."""
    import keepalive_guard.protocols as protocols

    cls = getattr(protocols, name)
    impl = _class_impl(name)
    statuses = [s.as_dict() for s in cls.keepalive_guard_status]
    assert {s["implementation"] for s in statuses} == {impl}
    assert state_errors(statuses, [impl]) == []
    base = protocol_module("h11").H11Protocol
    if impl == "httptools":
        base = protocol_module("httptools").HttpToolsProtocol
    assert cls.__mro__[1] is base  # (that base stays untouched: test_guarded_class_in_config)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_guarded_class_logs_one_line(impl, caplog):
    """Building a class logs one line: INFO where it carries a fix, DEBUG where none applies."""
    import logging

    import uvicorn

    import keepalive_guard.protocols as protocols

    caplog.set_level(logging.DEBUG, logger="keepalive_guard")
    cls = protocols.guarded_class(impl)
    lines = [r for r in caplog.records if r.name == "keepalive_guard"]
    assert [r.getMessage().split(": ")[1] for r in lines] == [
        "{} for uvicorn {} ({})".format(cls.__name__, uvicorn.__version__, impl)
    ]
    assert lines[0].levelno == (logging.INFO if any_bug(impl) else logging.DEBUG)


@pytest.mark.skipif(sys.version_info < (3, 7), reason="module __getattr__ is 3.7+")
@pytest.mark.parametrize("name", ["H11Protocol", "HttpToolsProtocol"])
def test_guarded_class_imports_only_its_implementation(name):
    """Building one class imports uvicorn's module of that implementation only."""
    script = textwrap.dedent(
        """
        import sys
        import keepalive_guard.protocols as protocols
        names = ["uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.httptools_impl"]
        def impl_modules():
            return [m for m in names if m in sys.modules]
        before = impl_modules()
        getattr(protocols, %r)
        after = impl_modules()
        built = [n for n in protocols.CLASSES if n in vars(protocols)]
        print(json.dumps([before, after, built]))
        """
        % name
    ).replace("import sys", "import json, sys")
    impl = _class_impl(name)
    if impl not in IMPLEMENTATIONS:
        pytest.skip("{} is not installed".format(impl))
    out = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), stdout=subprocess.PIPE, timeout=60
    ).stdout.decode()
    before, after, built = json.loads(out)
    module = "uvicorn.protocols.http.{}_impl".format(impl)
    assert before == [] and after == [module], out
    assert built == [name], out


@pytest.mark.skipif(sys.version_info < (3, 7), reason="module __getattr__ is 3.7+")
def test_guarded_class_built_once_across_threads():
    """Two threads asking for a class at once get the same class, built once."""
    if "h11" not in IMPLEMENTATIONS:
        pytest.skip("h11 is not installed")
    script = textwrap.dedent(
        """
        import json, threading, time
        import keepalive_guard.protocols as protocols
        original, calls = protocols.guarded_class, []
        def slow(*args, **kwargs):  # widen the window between look-up and store
            calls.append(1)
            time.sleep(0.2)
            return original(*args, **kwargs)
        protocols.guarded_class = slow
        got = []
        threads = [threading.Thread(target=lambda: got.append(protocols.H11Protocol))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        print(json.dumps([len(calls), len(got), len(set(map(id, got)))]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), stdout=subprocess.PIPE, timeout=60
    ).stdout.decode()
    assert json.loads(out) == [1, 2, 1], out


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_unguarded_serve_baseline(class_results, impl):
    """The same serve module with uvicorn's own class shows the bug on every connection."""
    if proof(impl) is None:
        pytest.skip("uvicorn {} has neither E nor E2 on {}".format(uvicorn_version(), impl))
    result = class_results["unguarded-" + impl]
    assert_ran(result)
    assert_proof(result, proof(impl), guarded=False)


# ---------------------------------------------------------------------------
# 2. --http on the real uvicorn command line

IMPORT_STRING_OK = uvicorn_version() >= Version("0.36.0")


@pytest.fixture(scope="module")
def cli_results(workdir):
    specs = {}
    for name in NAMES if HAS_CONFIG else ():
        scenario = proof(NAME_IMPL[name])
        specs[name] = (
            cli_server(name, uvicorn_argv("--http", name, *ws_args(scenario)), workdir),
            {"scenario": scenario, "runs": RUNS},
        )
    if IMPORT_STRING_OK:
        scenario = proof("h11")
        specs["import-string"] = (
            cli_server(
                "import-string",
                uvicorn_argv("--http", "keepalive_guard.protocols:H11Protocol", *ws_args(scenario)),
                workdir,
            ),
            {"scenario": scenario, "runs": RUNS},
        )
    for impl in IMPLEMENTATIONS:
        scenario = proof(impl)
        if scenario is not None:
            specs["unguarded-" + impl] = (
                cli_server(impl, uvicorn_argv("--http", impl, *ws_args(scenario)), workdir),
                {"scenario": scenario, "runs": RUNS},
            )
    return run_probes(specs)


@pytest.mark.parametrize("name", NAMES)
def test_cli_http_name(cli_results, workdir, name):
    """``uvicorn app --http guarded[-h11|-httptools]``: the guarded class serves, fixed;
    refused (a click.Choice without the names) where there is no uvicorn.config."""
    if not HAS_CONFIG:
        argv = uvicorn_argv("--http", name)(1)
        status, out, err = run_command(argv, env=clean_env(), cwd=workdir, timeout=60)
        assert status == 2 and re.search(r"Invalid value for .--http.", err), (status, err)
        return
    result = cli_results[name]
    assert_ran(result)
    assert list(result["states"]) == [result["pid"]], describe(result)
    assert_class_route(result["states"], result)
    assert_proof(result, proof(NAME_IMPL[name]), guarded=True)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_cli_unguarded_baseline(cli_results, impl):
    """``uvicorn app --http h11|httptools`` without the guard: the bug on every connection."""
    if proof(impl) is None:
        pytest.skip("uvicorn {} has neither E nor E2 on {}".format(uvicorn_version(), impl))
    result = cli_results["unguarded-" + impl]
    assert_ran(result)
    assert_proof(result, proof(impl), guarded=False)
    for state in result["states"].values():
        assert not any(state["uvicorn_classes_patched"].values())
        assert not state["guarded_classes_loaded"]


def test_cli_http_import_string(cli_results, workdir):
    """``--http keepalive_guard.protocols:H11Protocol``: served on 0.36.0+, refused before.

    The refusal is why the ``guarded*`` names exist: older releases only take
    the names in ``HTTP_PROTOCOLS`` (a click.Choice).
    """
    if IMPORT_STRING_OK:
        result = cli_results["import-string"]
        assert_ran(result)
        assert_class_route(result["states"], result)
        assert_proof(result, proof("h11"), guarded=True)
        return
    argv = uvicorn_argv("--http", "keepalive_guard.protocols:H11Protocol")(1)
    status, out, err = run_command(argv, env=clean_env(), cwd=workdir, timeout=60)
    assert status == 2, (status, out, err)
    assert re.search(r"Invalid value for .--http.", err), err


def test_cli_help_lists_names(workdir):
    """``python -m uvicorn --help`` lists the three names under --http."""
    status, out, err = run_command(UVICORN + ["--help"], env=clean_env(), cwd=workdir, timeout=60)
    assert status == 0, err
    match = re.search(r"^\s*--http\s+(\S+)", out, re.MULTILINE)
    assert match, out
    choices = match.group(1).strip("[]").split("|")
    for name in NAMES:
        assert (name in choices) == HAS_CONFIG, match.group(0)


def test_http_protocols_registry():
    """The start-up hook registered the names in uvicorn.config.HTTP_PROTOCOLS (this process)."""
    if not HAS_CONFIG:
        pytest.skip(NO_CONFIG)
    import uvicorn.config

    assert uvicorn.config.HTTP_PROTOCOLS["guarded"] == "keepalive_guard.protocols:AutoHTTPProtocol"
    assert uvicorn.config.HTTP_PROTOCOLS["guarded-h11"] == "keepalive_guard.protocols:H11Protocol"
    assert (
        uvicorn.config.HTTP_PROTOCOLS["guarded-httptools"]
        == "keepalive_guard.protocols:HttpToolsProtocol"
    )


# ---------------------------------------------------------------------------
# 3. gunicorn: a real master with workers

GUNICORN_VARIANTS = ("UvicornWorker", "UvicornH11Worker")


def test_gunicorn_route_refused_where_uvicorn_workers_cannot_start():
    """On 0.3.26-0.3.27 importing keepalive_guard.workers says why and what to use instead."""
    if not GUNICORN_BROKEN:
        from keepalive_guard import workers  # noqa: F401

        return
    with pytest.raises(ImportError) as info:
        import keepalive_guard.workers  # noqa: F401
    message = str(info.value)
    assert str(uvicorn_version()) in message and "KEEPALIVE_GUARD=1" in message, message


def _gunicorn_classes(variant):
    """(guarded worker class to pass to -k, its unguarded base to compare with, impl)."""
    import routes_support

    from keepalive_guard import workers

    guarded = getattr(workers, variant)
    base = guarded.__mro__[1]
    loop = worker_setting(base, "loop")
    impl = worker_setting(base, "http")
    a_proof = getattr(proof(AUTO if impl == "auto" else impl), "bug", None) == "A"
    if not loop_usable(loop) or (loop == "uvloop" and a_proof):
        # uvicorn 0.11-0.12's UvicornWorker demands uvloop, absent here; and
        # uvloop writes to a closed transport without a word, which is all A
        # shows on httptools: the same classes with loop="asyncio"
        guarded = routes_support.GuardedUvicornWorkerAsyncio
        base = routes_support.BaseUvicornWorkerAsyncio
    impl = worker_setting(base, "http")
    return guarded, base, AUTO if impl == "auto" else impl


def _gunicorn_cli_flags():
    import gunicorn.config

    return {flag for setting in gunicorn.config.KNOWN_SETTINGS for flag in setting.cli or ()}


def _gunicorn_argv(worker, processes):
    gunicorn = python_script("gunicorn")
    head = [gunicorn] if gunicorn else [sys.executable, "-m", "gunicorn"]
    if "--no-control-socket" in _gunicorn_cli_flags():
        # gunicorn 24+: not the control socket every master shares under ~/.gunicorn
        head.append("--no-control-socket")

    def argv(port):
        return head + [
            "-k",
            worker_path(worker),
            "-w",
            str(processes),
            "-b",
            "127.0.0.1:{}".format(port),
            "--keep-alive",  # every release maps it to Config(timeout_keep_alive=...)
            "1",
            "--graceful-timeout",
            "3",
            "--pythonpath",
            TESTS_DIR,  # routes_support's classes, where needed
            APP,
        ]

    return argv


@pytest.fixture(scope="module")
def gunicorn_results(workdir):
    if GUNICORN_BROKEN:
        pytest.skip(NO_GUNICORN)
    specs = {}
    for variant in GUNICORN_VARIANTS:
        guarded, base, impl = _gunicorn_classes(variant)
        scenario = proof(impl)
        specs[variant] = (
            cli_server("gunicorn " + variant, _gunicorn_argv(guarded, 2), workdir),
            {"scenario": scenario, "runs": MANY_RUNS, "want_pids": 2},
        )
        if scenario is not None:
            specs["unguarded-" + variant] = (
                cli_server("gunicorn base " + variant, _gunicorn_argv(base, 1), workdir),
                {"scenario": scenario, "runs": RUNS},
            )
    return run_probes(specs)


@pytest.mark.parametrize("variant", GUNICORN_VARIANTS)
def test_gunicorn_worker(gunicorn_results, variant):
    """``gunicorn -k keepalive_guard.workers.<variant> -w 2``: both workers guarded, fixed."""
    result = gunicorn_results[variant]
    _, _, impl = _gunicorn_classes(variant)
    assert_ran(result, want_pids=2)
    assert result["pid"] not in result["states"], "the master served requests?"
    assert_class_route(result["states"], result)
    assert_proof(result, proof(impl), guarded=True)


@pytest.mark.parametrize("variant", GUNICORN_VARIANTS)
def test_gunicorn_unguarded_baseline(gunicorn_results, variant):
    """The worker's own base class, same settings: the bug on every connection."""
    _, _, impl = _gunicorn_classes(variant)
    if proof(impl) is None:
        pytest.skip("uvicorn {} has neither E nor E2 on {}".format(uvicorn_version(), impl))
    result = gunicorn_results["unguarded-" + variant]
    assert_ran(result)
    assert_proof(result, proof(impl), guarded=False)


@pytest.mark.parametrize("variant", GUNICORN_VARIANTS)
def test_gunicorn_worker_classes(variant):
    """Base from uvicorn-worker on 0.30.0+ (installed there), from uvicorn.workers below;
    only ``http`` differs from the base's CONFIG_KWARGS, and it is the guarded class."""
    if GUNICORN_BROKEN:
        pytest.skip(NO_GUNICORN)
    from keepalive_guard import protocols, workers

    guarded = getattr(workers, variant)
    base = guarded.__mro__[1]
    if uvicorn_version() >= Version("0.30.0"):
        assert base.__module__.split(".")[0] == "uvicorn_worker", base.__module__
    else:
        assert base.__module__ == "uvicorn.workers", base.__module__
    assert base.__name__ == variant
    want = {"auto": protocols.AutoHTTPProtocol, "h11": protocols.H11Protocol}
    want["httptools"] = protocols.HttpToolsProtocol
    if not hasattr(base, "CONFIG_KWARGS"):  # 0.2.0-0.3.32: the worker names its class
        assert guarded.protocol_class is want[worker_setting(base, "http")]
        assert guarded.loop == base.loop and "CONFIG_KWARGS" not in vars(guarded)
        return
    base_kwargs = dict(base.CONFIG_KWARGS)
    assert guarded.CONFIG_KWARGS["http"] is want[base_kwargs.pop("http", "auto")]
    assert {k: v for k, v in guarded.CONFIG_KWARGS.items() if k != "http"} == base_kwargs


# ---------------------------------------------------------------------------
# 4. children spawned by --workers and --reload

LAUNCHER = textwrap.dedent(
    """\
    import json
    import sys

    if __name__ == "__main__":
        import keepalive_guard

        keepalive_guard.install()
        import uvicorn
        from keepalive_guard.verify.app import _guard_state

        # the parent itself is patched (modules imported here, as a server would)
        import uvicorn.protocols.http.h11_impl  # noqa: F401
        try:
            import uvicorn.protocols.http.httptools_impl  # noqa: F401
        except ImportError:
            pass
        print("PARENT " + json.dumps(_guard_state()), flush=True)
        kwargs = json.loads(sys.argv[2])
        uvicorn.run(
            "keepalive_guard.verify.app:app",
            host="127.0.0.1",
            port=int(sys.argv[1]),
            workers=2,
            loop="asyncio",
            lifespan="off",
            timeout_keep_alive=1,
            access_log=False,
            **kwargs
        )
    """
)


def _route_args():
    """--http/--ws for the zero-code routes: uvicorn's default unless only h11 shows a bug."""
    scenario = proof(ROUTE_IMPL)
    if ROUTE_IMPL == AUTO:
        return scenario, []
    return scenario, ["--http", "h11"] + ws_args(scenario)


def _guarded_name():
    return "guarded" if ROUTE_IMPL == AUTO else "guarded-h11"


@pytest.fixture(scope="module")
def workers_results(workdir):
    if not HAS_CHILDREN:
        pytest.skip(NO_CHILDREN)
    scenario, args = _route_args()
    launcher = os.path.join(workdir, "launch_install.py")
    with open(launcher, "w") as handle:
        handle.write(LAUNCHER)
    kwargs = {}
    if ROUTE_IMPL != AUTO:
        kwargs["http"] = "h11"
        if scenario is E2_SCENARIO:
            kwargs["ws"] = "wsproto"
    probe_kwargs = {"scenario": scenario, "runs": MANY_RUNS, "want_pids": 2}
    specs = {
        "env": (
            cli_server(
                "workers env", uvicorn_argv("--workers", "2", *args), workdir, KEEPALIVE_GUARD="1"
            ),
            probe_kwargs,
        ),
        "guarded": (
            cli_server(
                "workers --http",
                uvicorn_argv("--workers", "2", "--http", _guarded_name(), *ws_args(scenario)),
                workdir,
            ),
            probe_kwargs,
        ),
        "bare-install": (
            cli_server(
                "bare install",
                lambda port: [sys.executable, launcher, str(port), json.dumps(kwargs)],
                workdir,
            ),
            probe_kwargs,
        ),
    }
    return run_probes(specs)


@pytest.mark.parametrize("how", ["env", "guarded"])
def test_workers_children_guarded(workers_results, how):
    """``uvicorn --workers 2`` under KEEPALIVE_GUARD=1 / --http guarded: every child guarded."""
    result = workers_results[how]
    assert_ran(result, want_pids=2)
    assert result["pid"] not in result["states"], describe(result)
    if how == "env":
        assert_install_route(result["states"], result, ROUTE_IMPL)
    else:
        assert_class_route(result["states"], result)
    assert_proof(result, proof(ROUTE_IMPL), guarded=True)


def test_workers_bare_install_does_not_reach_children(workers_results):
    """A bare install() in the parent: the spawned children are NOT guarded (README: limits)."""
    result = workers_results["bare-install"]
    assert_ran(result, want_pids=2)
    parent = [line for line in result["stdout"].splitlines() if line.startswith("PARENT ")]
    assert parent, describe(result)
    parent_state = json.loads(parent[0][len("PARENT ") :])
    assert parent_state["pid"] == result["pid"]
    for cls_name, is_patched in parent_state["uvicorn_classes_patched"].items():
        assert is_patched == any_bug(CLASS_IMPL[cls_name]), parent_state
    assert_install_route(result["states"], result, ROUTE_IMPL, installed=False)
    assert_proof(result, proof(ROUTE_IMPL), guarded=False)


@pytest.fixture(scope="module")
def reload_results(workdir, tmp_path_factory):
    if not HAS_CHILDREN:
        pytest.skip(NO_CHILDREN)
    scenario, args = _route_args()
    specs = {}
    for how in ("env", "guarded"):
        reload_dir = str(tmp_path_factory.mktemp("reload-" + how))
        watched = os.path.join(reload_dir, "watched.py")
        with open(watched, "w") as handle:
            handle.write("VALUE = 1\n")
        if how == "env":
            extra, env = args, {"KEEPALIVE_GUARD": "1"}
        else:
            extra, env = ["--http", _guarded_name()] + ws_args(scenario), {}
        specs[how] = (
            cli_server(
                "reload " + how,
                uvicorn_argv("--reload", "--reload-dir", reload_dir, *extra),
                workdir,
                **env,
            ),
            {"scenario": scenario, "runs": RUNS, "reload_file": watched},
        )
    return run_probes(specs)


@pytest.mark.parametrize("how", ["env", "guarded"])
def test_reload_children_guarded(reload_results, how):
    """``uvicorn --reload`` under KEEPALIVE_GUARD=1 / --http guarded: the child, and the
    child started after a reload, are guarded."""
    result = reload_results[how]
    assert_ran(result)
    assert result["pid"] not in result["states"], describe(result)
    new = result.get("reloaded_states") or {}
    assert len(new) == 1, "no new child after touching the watched file\n" + describe(result)
    for states in (result["states"], new):
        if how == "env":
            assert_install_route(states, result, ROUTE_IMPL)
        else:
            assert_class_route(states, result)
    assert_proof(result, proof(ROUTE_IMPL), guarded=True)
    if proof(ROUTE_IMPL) is not None:
        assert_proof(result, proof(ROUTE_IMPL), guarded=True, count_key="reloaded_count")


# ---------------------------------------------------------------------------
# 5. the wrapper, and 6. zero code: KEEPALIVE_GUARD=1


@pytest.fixture(scope="module")
def zero_code_results(workdir):
    scenario, args = _route_args()
    kwargs = {"scenario": scenario, "runs": RUNS}
    specs = {
        "wrapper": (cli_server("wrapper", wrapper_argv(*args), workdir), kwargs),
        "env": (cli_server("env", uvicorn_argv(*args), workdir, KEEPALIVE_GUARD="1"), kwargs),
    }
    if args:  # the variant without any --http: decisions and patch state only
        specs["env-default"] = (
            cli_server("env default", uvicorn_argv(), workdir, KEEPALIVE_GUARD="1"),
            {"scenario": proof(AUTO), "runs": RUNS},
        )
    return run_probes(specs)


def test_wrapper_guards_server(zero_code_results):
    """``keepalive-guard run -- python -m uvicorn ...``: the command (same PID) is guarded."""
    result = zero_code_results["wrapper"]
    assert_ran(result)
    assert list(result["states"]) == [result["pid"]], "run must exec the command\n" + describe(
        result
    )
    assert_install_route(result["states"], result, ROUTE_IMPL)
    assert_proof(result, proof(ROUTE_IMPL), guarded=True)


#: "env" runs without --http except where only h11 has a bug left (0.27.1-0.52.4):
#: there "env" serves h11 for the proof and "env-default" is the plain command
ZERO_CODE_KEYS = ["env"] + (["env-default"] if ROUTE_IMPL != AUTO else [])


@pytest.mark.parametrize("key", ZERO_CODE_KEYS)
def test_zero_code_env(zero_code_results, key):
    """``KEEPALIVE_GUARD=1 python -m uvicorn app``: uvicorn's own classes patched, fixed."""
    result = zero_code_results[key]
    impl = ROUTE_IMPL if key == "env" else AUTO
    assert_ran(result)
    assert list(result["states"]) == [result["pid"]], describe(result)
    assert_install_route(result["states"], result, impl)
    assert_proof(result, proof(impl), guarded=True)


STATUS_CODE = "import json, keepalive_guard; print(json.dumps(keepalive_guard.status().as_dict()))"


@pytest.mark.parametrize("how", ["env", "wrapper"])
def test_zero_code_decisions(workdir, how):
    """The guard installs at start-up and decides per the oracle (0.53.0+: fixed upstream)."""
    if how == "env":
        argv, env = [sys.executable, "-c", STATUS_CODE], clean_env(KEEPALIVE_GUARD="1")
    else:
        argv = [python_script("keepalive-guard"), "run", "--", sys.executable, "-c", STATUS_CODE]
        env = clean_env()
    status, out, err = run_command(argv, env=env, cwd=workdir, timeout=60)
    assert status == 0, err
    report = json.loads(out)
    assert report["installed"] is True, report
    assert state_errors(report["fixes"], IMPLEMENTATIONS) == [], err


def test_without_env_nothing_installed(workdir):
    """Control: the same process without KEEPALIVE_GUARD has the hook but not the guard."""
    status, out, err = run_command(
        [sys.executable, "-c", STATUS_CODE], env=clean_env(), cwd=workdir, timeout=60
    )
    assert status == 0, err
    assert json.loads(out)["installed"] is False


def test_wrapper_exit_status(workdir):
    """``keepalive-guard run -- python -c 'sys.exit(7)'`` exits 7."""
    argv = [
        python_script("keepalive-guard"),
        "run",
        "--",
        sys.executable,
        "-c",
        "import sys; sys.exit(7)",
    ]
    status, out, err = run_command(argv, env=clean_env(), cwd=workdir, timeout=60)
    assert status == 7, (out, err)


SIGTERM_CHILD = textwrap.dedent(
    """\
    import os, signal, sys, time
    def on_term(signum, frame):
        print("GOT-SIGTERM", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
    print("READY {}".format(os.getpid()), flush=True)
    for _ in range(600):
        time.sleep(0.1)
    sys.exit(0)
    """
)


def test_wrapper_forwards_sigterm(workdir):
    """SIGTERM to the wrapper's PID reaches the command: its handler runs, exit status 3."""
    argv = [python_script("keepalive-guard"), "run", "--", sys.executable, "-c", SIGTERM_CHILD]
    process = Process(argv, env=clean_env(), cwd=workdir, stdout=subprocess.PIPE)
    try:
        line, seen = read_line(process.proc.stdout, "READY ", timeout=60)
        assert line is not None, (seen, process.stderr())
        assert int(line.split()[1]) == process.pid  # run execs: one process, one PID
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait_exited(30), "the command ignored SIGTERM"
        rest = seen + process.proc.stdout.read().decode()
    finally:
        status = process.stop()
        process.proc.stdout.close()
    assert "GOT-SIGTERM" in rest, (rest, process.stderr())
    assert status == 3, (status, process.stderr())


SITE_CHILD = textwrap.dedent(
    """\
    import json, os, keepalive_guard
    installed = keepalive_guard.status(import_modules=False).installed
    try:
        import uvicorn.protocols.http.h11_impl
    except ImportError:  # before 0.2.17
        import uvicorn.protocols.http.h11
    from keepalive_guard.verify.app import _guard_state
    print(json.dumps({"pid": os.getpid(), "marker": os.environ.get("ROUTES_SITECUSTOMIZE"),
                      "installed": installed, "state": _guard_state()}))
    """
)


def test_wrapper_keeps_user_sitecustomize(workdir, tmp_path):
    """A user's sitecustomize.py (on PYTHONPATH) still runs under ``keepalive-guard run``,
    and the guard is installed in the same child."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    marker = site_dir / "sitecustomize-ran"
    (site_dir / "sitecustomize.py").write_text(
        textwrap.dedent(
            """\
            import os
            os.environ["ROUTES_SITECUSTOMIZE"] = "ran"
            with open({!r}, "w") as handle:
                handle.write(str(os.getpid()))
            """
        ).format(str(marker))
    )
    argv = [python_script("keepalive-guard"), "run", "--", sys.executable, "-c", SITE_CHILD]
    status, out, err = run_command(
        argv, env=clean_env(PYTHONPATH=str(site_dir)), cwd=workdir, timeout=60
    )
    assert status == 0, err
    child = json.loads(out)
    assert child["marker"] == "ran", child
    assert marker.read_text() == str(child["pid"]), "sitecustomize ran in another process?"
    assert child["installed"] is True, (child, err)
    assert child["state"]["uvicorn_classes_patched"]["H11Protocol"] == any_bug("h11"), child
