"""A new user's first hour (issue #21): pickled classes, the server's log, status.

* Every public class of ``keepalive_guard.protocols`` and ``.workers``
  pickles here and unpickles to itself in a fresh process; a real
  ``uvicorn.run("mod:app", http=<class>, workers=2)`` (and ``reload=True``)
  serves bug E's pipelined pair with both responses, where the same command
  with uvicorn's own class loses them.
* The guard's activation line shows in the real server's stderr, in the
  server's format, once per process: the uvicorn CLI under
  ``KEEPALIVE_GUARD=1`` (plain and ``--workers 2``), gunicorn with the
  guarded worker, ``uvicorn.run``; a user's own logging configuration shows it
  once, in the user's format; an unrecognised-code warning shows in
  uvicorn's format once; outside a server the logger behaves as before.

Subprocesses run from a temporary directory, so that the installed package
(and its start-up hook) is what they import.
"""

import json
import os
import pickle
import re
import sys
import textwrap

import pytest
from conftest import (
    APP,
    GUNICORN_BROKEN,
    HAS_CHILDREN,
    HAS_RUN_STRING,
    IMPLEMENTATIONS,
    NO_CHILDREN,
    NO_GUNICORN,
    NO_RUN_STRING,
    any_bug,
    has_bug,
    protocol_module,
    uvicorn_argv,
    uvicorn_version,
)
from packaging.version import Version
from routes_support import (
    CommandServer,
    loop_usable,
    python_script,
    run_command,
    run_probes,
    worker_path,
    worker_setting,
)

from keepalive_guard.verify.scenarios import SCENARIOS

E_SCENARIO = next(s for s in SCENARIOS if s.bug == "E")
RUNS = 8  # two workers: enough connections to land on both
CLASS_OF = {"h11": "H11Protocol", "httptools": "HttpToolsProtocol"}
#: Python 3.6 has no module __getattr__: importing keepalive_guard.protocols builds every class
BUILT_PER_PROCESS = len(IMPLEMENTATIONS) if sys.version_info < (3, 7) else 1
#: uvicorn's own default format, "INFO:     message" (levelname, colon, padded to 10)
UVICORN_LINE = re.compile(r"^(INFO|DEBUG|WARNING): +keepalive-guard: (.*)$", re.MULTILINE)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def env(**extra):
    environ = dict(os.environ)
    for name in ("KEEPALIVE_GUARD", "KEEPALIVE_GUARD_FIXES", "KEEPALIVE_GUARD_STRICT"):
        environ.pop(name, None)
    environ.pop("PYTHONPATH", None)
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(extra)
    return environ


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("first-hour"))


def describe(result):
    return "error: {}\nstates: {}\ncount: {}\nstderr:\n{}".format(
        result.get("error"),
        json.dumps(result.get("states"), default=str),
        result.get("count"),
        result.get("log", "")[-5000:],
    )


# ---------------------------------------------------------------------------
# 1. pickling

UNPICKLE = textwrap.dedent(
    """\
    import binascii, importlib, json, pickle, sys
    out = []
    for item in sys.argv[1:]:
        module, name, data = item.split(":")
        cls = pickle.loads(binascii.unhexlify(data))
        expected = getattr(importlib.import_module(module), name)
        again = pickle.loads(pickle.dumps(cls))
        out.append([module, name, cls is expected, again is cls, cls.__name__])
    print(json.dumps(out))
    """
)


def public_classes():
    from keepalive_guard import protocols

    found = [("keepalive_guard.protocols", name) for name in protocols.CLASSES]
    if GUNICORN_BROKEN:  # the route is refused there (test_routes says how)
        return found
    try:
        from keepalive_guard import workers
    except ImportError as exc:  # gunicorn not installed: say so, do not pass silently
        pytest.fail("keepalive_guard.workers does not import here: {}".format(exc))
    found += [("keepalive_guard.workers", name) for name in workers.__all__]
    return found


def test_public_classes_pickle_in_fresh_process(workdir):
    """Each public class pickles here and unpickles to that same class in a fresh process."""
    import binascii
    import importlib

    items = []
    for module, name in public_classes():
        cls = getattr(importlib.import_module(module), name)
        assert pickle.loads(pickle.dumps(cls)) is cls
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(cls, protocol=protocol)
            items.append("{}:{}:{}".format(module, name, binascii.hexlify(data).decode()))
    status, out, err = run_command(
        [sys.executable, "-c", UNPICKLE] + items, env=env(), cwd=workdir, timeout=120
    )
    assert status == 0, err
    results = json.loads(out)
    assert len(results) == len(items)
    for module, name, is_expected, round_trip, _ in results:
        assert is_expected and round_trip, (module, name, results)
    workers = set() if GUNICORN_BROKEN else {"UvicornWorker", "UvicornH11Worker"}
    assert {r[1] for r in results} == {
        "AutoHTTPProtocol",
        "H11Protocol",
        "HttpToolsProtocol",
    } | workers


LAUNCHER = textwrap.dedent(
    """\
    import json
    import sys

    if __name__ == "__main__":
        import uvicorn

        port, name, options = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
        if options.pop("user_logging", False):
            import logging

            logging.basicConfig(level=logging.DEBUG, format="USER %(name)s| %(message)s")
        if options.pop("foreign_patch", False):  # someone else's patch: unrecognised code
            import uvicorn.protocols.http.h11_impl as h11_impl

            original = h11_impl.H11Protocol.on_response_complete

            def on_response_complete(self):
                return original(self)

            h11_impl.H11Protocol.on_response_complete = on_response_complete
        from keepalive_guard import protocols  # (on Python 3.6 this builds every class)

        http = getattr(protocols, name) if hasattr(protocols, name) else name
        uvicorn.run(
            options.pop("app"),
            host="127.0.0.1",
            port=port,
            http=http,
            loop="asyncio",
            lifespan="off",
            timeout_keep_alive=1,
            access_log=False,
            **options
        )
    """
)


def launcher(workdir, name, **options):
    path = os.path.join(workdir, "launch.py")
    with open(path, "w") as handle:
        handle.write(LAUNCHER)

    def argv(port):
        return [sys.executable, path, str(port), name, json.dumps(dict(options, app=APP))]

    return lambda: CommandServer(argv, env=env(), cwd=workdir, name="launcher " + name)


def e_impls():
    return [impl for impl in IMPLEMENTATIONS if has_bug("E", impl)]


@pytest.fixture(scope="module")
def class_results(workdir, tmp_path_factory):
    """uvicorn.run(http=<guarded class>, workers=2 | reload=True), and uvicorn's own class."""
    if not HAS_CHILDREN:
        pytest.skip(NO_CHILDREN)
    specs = {}
    for impl in e_impls():
        probe = {"scenario": E_SCENARIO, "runs": RUNS, "want_pids": 2}
        specs["workers-" + impl] = (launcher(workdir, CLASS_OF[impl], workers=2), probe)
        specs["unguarded-" + impl] = (launcher(workdir, impl, workers=2), probe)
    if e_impls():
        reload_dir = str(tmp_path_factory.mktemp("reload"))
        specs["reload"] = (
            launcher(workdir, "AutoHTTPProtocol", reload=True, reload_dirs=[reload_dir]),
            {"scenario": E_SCENARIO if has_bug("E", "h11") else None, "runs": 5},
        )
    return run_probes(specs)


def _skip_without_e():
    if not e_impls():
        pytest.skip("this uvicorn release has no bug E (first fixed in 0.27.1)")


@pytest.mark.parametrize("impl", ["h11", "httptools"])
def test_uvicorn_run_workers_with_class(class_results, impl):
    """uvicorn.run("mod:app", http=<class>, workers=2): no PicklingError, both workers guarded,
    the pipelined pair answered on every connection; uvicorn's own class loses it on every one."""
    _skip_without_e()
    if impl not in e_impls():
        pytest.skip("{} is not installed here".format(impl))
    result = class_results["workers-" + impl]
    assert result.get("error") is None, describe(result)
    assert "PicklingError" not in result["log"], describe(result)
    assert len(result["states"]) >= 2, describe(result)
    for state in result["states"].values():
        assert state["guarded_classes_loaded"], describe(result)
        assert not any(state["uvicorn_classes_patched"].values()), describe(result)
    assert result["count"] == 0, describe(result)
    baseline = class_results["unguarded-" + impl]
    assert baseline.get("error") is None, describe(baseline)
    assert baseline["count"] == RUNS, describe(baseline)


def test_uvicorn_run_reload_with_class(class_results):
    """uvicorn.run(..., reload=True, http=AutoHTTPProtocol): the reloader's child serves guarded."""
    _skip_without_e()
    result = class_results["reload"]
    assert result.get("error") is None, describe(result)
    assert "PicklingError" not in result["log"], describe(result)
    assert len(result["states"]) == 1 and result["pid"] not in result["states"], describe(result)
    for state in result["states"].values():
        assert state["guarded_classes_loaded"], describe(result)
    if result["count"] is not None:
        assert result["count"] == 0, describe(result)


# ---------------------------------------------------------------------------
# 2. the guard's line in the server's log


def activation_impl():
    """The implementation whose line is INFO here (a fix applied), else None."""
    return next((impl for impl in IMPLEMENTATIONS if any_bug(impl)), None)


def uvicorn_cli(*extra):
    debug = [] if activation_impl() else ["--log-level", "debug"]
    return uvicorn_argv("--http", activation_impl() or "h11", *(list(extra) + debug))


def gunicorn_argv(workers):
    import routes_support

    from keepalive_guard import workers as guarded

    worker = guarded.UvicornH11Worker
    if not loop_usable(worker_setting(worker, "loop")):  # 0.11-0.12 without uvloop installed
        worker = routes_support.GuardedUvicornWorkerAsyncio
    head = [python_script("gunicorn") or sys.executable]
    head += [] if python_script("gunicorn") else ["-m", "gunicorn"]

    def argv(port):
        return head + [
            "-k",
            worker_path(worker),
            "-w",
            str(workers),
            "-b",
            "127.0.0.1:{}".format(port),
            "--keep-alive",
            "1",
            "--graceful-timeout",
            "3",
            "--pythonpath",
            os.path.dirname(os.path.abspath(__file__)),
            "--log-level",
            "info" if any_bug(worker_impl(worker)) else "debug",
            APP,
        ]

    return argv


def worker_impl(worker):
    http = worker_setting(worker, "http")  # a guarded class; before 0.4.0 the name
    status = getattr(http, "keepalive_guard_status", None)
    return status[0].implementation if status else http


@pytest.fixture(scope="module")
def log_results(workdir):
    def cli(name, argv, **environ):
        return lambda: CommandServer(argv, env=env(**environ), cwd=workdir, name=name)

    one, two = {"want_pids": 1}, {"want_pids": 2}
    impl = activation_impl() or "h11"
    level = {} if activation_impl() else {"log_level": "debug"}  # nothing applies: DEBUG
    specs = {"cli": (cli("cli", uvicorn_cli(), KEEPALIVE_GUARD="1"), one)}
    if HAS_CHILDREN:
        specs["cli-workers"] = (
            cli("cli workers", uvicorn_cli("--workers", "2"), KEEPALIVE_GUARD="1"),
            two,
        )
        specs["run-workers"] = (launcher(workdir, CLASS_OF[impl], workers=2, **level), two)
    if not GUNICORN_BROKEN:
        specs["gunicorn"] = (cli("gunicorn", gunicorn_argv(2)), two)
    if HAS_RUN_STRING:
        specs["user-logging"] = (launcher(workdir, CLASS_OF[impl], user_logging=True), one)
        specs["foreign"] = (launcher(workdir, "H11Protocol", foreign_patch=True), one)
    return run_probes(specs)


#: why a route of log_results cannot exist on this release
MISSING = {
    "cli-workers": NO_CHILDREN,
    "run-workers": NO_CHILDREN,
    "gunicorn": NO_GUNICORN,
    "user-logging": NO_RUN_STRING,
    "foreign": NO_RUN_STRING,
}


def route_result(log_results, key):
    if key not in log_results:
        pytest.skip(MISSING[key])
    return log_results[key]


def guard_lines(log):
    return UVICORN_LINE.findall(log)


def expected_levels():
    """INFO where a backport applies; where none does, DEBUG, or INFO if a fix beyond
    upstream (R1-R5) applies (the servers then run with --log-level debug)."""
    return ("INFO",) if activation_impl() else ("DEBUG", "INFO")


#: Known package bug (keepalive_guard/serverlog.py, _hook_main): the waiting line is
#: released only after uvicorn's get_logger (0.2.15+) or Config.configure_logging (0.11+);
#: 0.2.0-0.2.14's CLI calls logging.basicConfig itself, so the line never shows.
CLI_LINE_BUG = pytest.mark.xfail(
    uvicorn_version() < Version("0.2.15"),
    reason="package bug: serverlog has no release hook for uvicorn 0.2.0-0.2.14's CLI",
    strict=True,
)
#: Known package bug (same module): before 0.10.0 uvicorn's gunicorn worker gives
#: ``uvicorn.error`` no handler (it hands uvicorn gunicorn's logger object), and neither
#: get_logger nor Config.configure_logging runs there: the line never shows.
GUNICORN_LINE_BUG = pytest.mark.xfail(
    uvicorn_version() < Version("0.10.0"),
    reason="package bug: serverlog has no route to gunicorn's log in workers before 0.10.0",
    strict=True,
)


@CLI_LINE_BUG
def test_cli_logs_activation_once(log_results):
    """KEEPALIVE_GUARD=1 uvicorn app: one activation line, in uvicorn's format, at INFO
    where a fix applies (DEBUG, shown with --log-level debug, where none does)."""
    result = log_results["cli"]
    assert result.get("error") is None and result["states"], describe(result)
    lines = guard_lines(result["log"])
    impl = activation_impl() or "h11"
    assert len(lines) == 1, describe(result)
    level, text = lines[0]
    assert level in expected_levels(), describe(result)
    import uvicorn

    assert text.startswith("uvicorn {} ({}): ".format(uvicorn.__version__, impl)), text
    if has_bug("E", impl):
        assert re.search(r"applied [^;]*\bE\b", text), text


def test_cli_workers_log_once_per_worker(log_results):
    """KEEPALIVE_GUARD=1 uvicorn app --workers 2: one line per worker, none in the parent."""
    result = route_result(log_results, "cli-workers")
    assert result.get("error") is None and len(result["states"]) >= 2, describe(result)
    assert len(guard_lines(result["log"])) == 2, describe(result)


@GUNICORN_LINE_BUG
def test_gunicorn_worker_logs_once_per_worker(log_results):
    """gunicorn -k keepalive_guard.workers.UvicornH11Worker -w 2: the line in gunicorn's
    format, once from each worker's PID, never from the master's."""
    result = route_result(log_results, "gunicorn")
    assert result.get("error") is None and len(result["states"]) >= 2, describe(result)
    pids = re.findall(r"^\[[^]]+\] \[(\d+)\] \[\w+\] keepalive-guard: ", result["log"], re.M)
    assert sorted(map(int, pids)) == sorted(list(result["states"]) * BUILT_PER_PROCESS), describe(
        result
    )
    assert result["pid"] not in map(int, pids), describe(result)


def test_uvicorn_run_workers_logs_in_each_process(log_results):
    """uvicorn.run("mod:app", http=<class>, workers=2): the class is built in the parent
    (before uvicorn configured logging: the line waits for it) and in each worker."""
    result = route_result(log_results, "run-workers")
    assert result.get("error") is None and len(result["states"]) >= 2, describe(result)
    lines = guard_lines(result["log"])
    assert len(lines) == 3 * BUILT_PER_PROCESS, describe(result)
    assert {level for level, _ in lines} <= set(expected_levels()), describe(result)


def test_user_logging_shows_line_once(log_results):
    """The user configured logging (basicConfig): the line shows once, in the user's format."""
    result = route_result(log_results, "user-logging")
    assert result.get("error") is None, describe(result)
    assert guard_lines(result["log"]) == [], describe(result)
    user = re.findall(r"^USER keepalive_guard\| keepalive-guard: ", result["log"], re.M)
    assert len(user) == BUILT_PER_PROCESS, describe(result)


def test_unrecognised_warning_in_uvicorn_format(log_results):
    """A foreign patch on H11Protocol: the guard's WARNING shows in uvicorn's format,
    each line once, and no bare (unformatted) copy."""
    result = route_result(log_results, "foreign")
    assert result.get("error") is None, describe(result)
    warnings = [text for level, text in guard_lines(result["log"]) if level == "WARNING"]
    if any_bug("h11"):
        assert warnings, describe(result)
    assert len(warnings) == len(set(warnings)), describe(result)
    assert not re.search(r"^keepalive-guard: ", result["log"], re.M), describe(result)


OUTSIDE = textwrap.dedent(
    """\
    import {module} as h11_impl
    original = h11_impl.H11Protocol.{method}
    def foreign(self, *args):
        return original(self, *args)
    h11_impl.H11Protocol.{method} = foreign
    import keepalive_guard
    keepalive_guard.install()
    """
)


CONFIGURED = 'import logging; logging.basicConfig(format="%(levelname)s|%(message)s")\n'


def takes_log_config():
    """uvicorn.Config(log_config=...): where the release has it."""
    import inspect

    import uvicorn

    config = getattr(uvicorn, "Config", None)
    return config is not None and "log_config" in inspect.signature(config).parameters


def test_outside_uvicorn_logger_as_before(workdir):
    """No server, no logging configured: exactly the WARNING records reach stderr, bare
    (the logging module's last resort), the INFO/DEBUG line does not; nothing on stdout.
    The control run configures logging at WARNING, showing each record's level."""
    runs = []
    module = protocol_module("h11")  # uvicorn.protocols.http.h11 before 0.2.17
    # a method a fix inspects: on_response_complete from 0.2.7, A's connection_lost before
    method = "on_response_complete"
    if not hasattr(module.H11Protocol, method):
        method = "connection_lost"
    outside = OUTSIDE.format(module=module.__name__, method=method)
    # the third run makes uvicorn configure no logging (log_config=None): the waiting
    # records are offered again, find no handler, and still reach stderr once, at exit
    told_nothing = outside + 'import uvicorn\nuvicorn.Config("x:y", log_config=None)\n'
    codes = [outside, CONFIGURED + outside] + ([told_nothing] if takes_log_config() else [])
    for code in codes:
        status, out, err = run_command(
            [sys.executable, "-c", code], env=env(), cwd=workdir, timeout=60
        )
        assert status == 0 and out == "", (out, err)
        runs.append([line for line in err.splitlines() if "keepalive-guard" in line])
    bare, control = runs[:2]
    assert all(line.startswith("WARNING|") for line in control), control
    assert bare == [line[len("WARNING|") :] for line in control], (bare, control)
    if takes_log_config():  # (no uvicorn.Config(log_config=...) before 0.11: two runs)
        assert runs[2] == bare, (runs[2], bare)
    if any_bug("h11"):
        assert bare, "the foreign patch should make a fix unrecognised"


# ---------------------------------------------------------------------------
# 3. status wording


def test_status_says_this_process(workdir):
    """``keepalive-guard status`` says what it reports on: this process, not a server."""
    status, out, err = run_command(
        [python_script("keepalive-guard"), "status"], env=env(), cwd=workdir, timeout=60
    )
    assert status == 0, err
    first = out.splitlines()[0]
    assert "this process" in first and first != "keepalive-guard: installed", out


def test_e2_httptools_detail_names_a_fix():
    """E2 on httptools points at a fix a user can look up in the catalogue."""
    from keepalive_guard.fixes import CATALOGUE

    reason = CATALOGUE["E2"].not_applicable["httptools"]
    assert "fix R2" in reason, reason
