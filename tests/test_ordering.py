"""Install in every order and by every route, each case in a fresh interpreter.

Each case runs ``sys.executable -c <script>`` in an empty directory, so the
package comes from site-packages (the installed wheel), never from the source
tree.  The scripts print ``RESULT <key> <json>`` lines; the expectations come
from conftest's oracle (BUGS.md), not from keepalive_guard.

"Guarded" below means: some attribute of uvicorn's protocol or cycle classes
is an object whose code lives in keepalive_guard (or whose type does).
"""

import json
import os
import site
import subprocess
import sys
import sysconfig
import warnings

import pytest
from conftest import (
    FIRST_FIXED,
    HAS_CONFIG,
    IMPLEMENTATIONS,
    OPT_IN,
    expected_state,
)
from harness import Server

from keepalive_guard.verify.scenarios import SCENARIOS, TIMEOUT

ALL_FIXES = tuple(FIRST_FIXED)
FIXES = tuple(fix for fix in ALL_FIXES if fix not in OPT_IN)  # the default selection
IMPLS = ("h11", "httptools")
RUN_TIMEOUT = 90  # seconds per subprocess; they normally take well under one

INSTALL_HINT = (
    "keepalive-guard must be installed as a wheel into this interpreter's site-packages "
    "(uv build --wheel -o dist && uv pip install --reinstall dist/keepalive_guard-*.whl); "
    "the zero-code KEEPALIVE_GUARD=1 route and the console script only exist then"
)

PRELUDE = r'''
import json, sys

# h11.py / httptools.py before uvicorn 0.2.17, h11_impl.py / httptools_impl.py since
_MODULES = {
    "h11": ("uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.h11", "H11Protocol"),
    "httptools": (
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.protocols.http.httptools",
        "HttpToolsProtocol",
    ),
}


def import_protocols():
    import importlib
    import importlib.util

    for impl, (new, old, _) in sorted(_MODULES.items()):
        try:
            importlib.import_module(new if importlib.util.find_spec(new) else old)
        except ImportError:
            if impl == "h11":
                raise


def classes():
    out = []
    for impl, (new, old, protocol) in sorted(_MODULES.items()):
        module = sys.modules.get(new) or sys.modules.get(old)
        if module is not None and hasattr(module, "RequestResponseCycle"):
            out += [(impl, getattr(module, protocol)), (impl, module.RequestResponseCycle)]
    return out


def _from_guard(value):
    for candidate in (value, getattr(value, "__func__", None)):
        code = getattr(candidate, "__code__", None)
        if code is not None and "keepalive_guard" in code.co_filename:
            return True
    return type(value).__module__.startswith("keepalive_guard")


def guarded():
    """{impl: ["Class.attr", ...]} for every attribute keepalive_guard put there."""
    out = {}
    for impl, cls in classes():
        for name, value in sorted(cls.__dict__.items()):
            if _from_guard(value):
                out.setdefault(impl, []).append(cls.__name__ + "." + name)
    return out


def snapshot():
    return [(cls, dict(cls.__dict__)) for _, cls in classes()]


def changed(snap):
    out = []
    for cls, before in snap:
        now = dict(cls.__dict__)
        for name in sorted(set(before) | set(now)):
            if before.get(name, snap) is not now.get(name, snap):
                out.append(cls.__name__ + "." + name)
    return out


def states(report):
    return {s.fix + "/" + s.implementation: s.state for s in report.fixes}


def emit(key, value):
    print("RESULT " + key + " " + json.dumps(value, sort_keys=True), flush=True)
'''


def expected(fix, impl):
    """The state of ``fix`` on ``impl`` under the default selection."""
    if fix in OPT_IN:
        return "disabled"
    return expected_state(fix, impl) if impl in IMPLEMENTATIONS else "not applicable"


EXPECTED = {"{}/{}".format(fix, impl): expected(fix, impl) for fix in ALL_FIXES for impl in IMPLS}
GUARDED_IMPLS = sorted(
    impl for impl in IMPLS if any(expected(fix, impl) == "applied" for fix in FIXES)
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ordering"))


def _environ(env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_GUARD")}
    environ.update(env or {})
    return environ


def run(workdir, args, env=None, timeout=RUN_TIMEOUT):
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        env=_environ(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail("timed out after {} s\nstdout:\n{}\nstderr:\n{}".format(timeout, out, err))
    return proc.returncode, out, err


def script(workdir, body, env=None):
    """Run PRELUDE + body; return {key: value} of its RESULT lines."""
    code, out, err = run(workdir, [sys.executable, "-c", PRELUDE + body], env=env)
    assert code == 0, "exit {}\nstdout:\n{}\nstderr:\n{}".format(code, out, err)
    assert "Traceback" not in err, err
    results = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, key, value = line.split(" ", 2)
            results[key] = json.loads(value)
    return results


def assert_guarded(result, context):
    assert sorted(result) == GUARDED_IMPLS, "{}: {}".format(context, result)


# --- orders ---------------------------------------------------------------------


def test_install_before_importing_uvicorn(workdir):
    r = script(
        workdir,
        """
import keepalive_guard
report = keepalive_guard.install()
emit("protocols_loaded", classes() != [])
emit("before", states(report))
import_protocols()
emit("after", states(keepalive_guard.status(import_modules=False)))
emit("guarded", guarded())
keepalive_guard.uninstall()
emit("guarded_after_uninstall", guarded())
""",
    )
    assert r["protocols_loaded"] is False, "install() imported uvicorn's protocol modules"
    # What the version settles is said at once; the rest waits for the modules' code.
    assert r["before"] == {
        key: "pending" if state == "applied" else state for key, state in EXPECTED.items()
    }
    assert r["after"] == EXPECTED
    assert_guarded(r["guarded"], "patched when the protocol modules loaded")
    assert r["guarded_after_uninstall"] == {}


def test_install_after_importing_uvicorn(workdir):
    r = script(
        workdir,
        """
import_protocols()
before = snapshot()
import keepalive_guard
emit("states", states(keepalive_guard.install()))
emit("wrapt", "wrapt" in sys.modules)
emit("guarded", guarded())
keepalive_guard.uninstall()
emit("restored", changed(before))
emit("guarded_after_uninstall", guarded())
""",
    )
    assert r["states"] == EXPECTED
    assert r["wrapt"] is False, "nothing left to wait for: no post-import hook, no wrapt"
    assert_guarded(r["guarded"], "patched at install()")
    assert r["restored"] == [] and r["guarded_after_uninstall"] == {}


def test_install_twice(workdir):
    r = script(
        workdir,
        """
import keepalive_guard
keepalive_guard.install()
keepalive_guard.install()          # before import: hooks must not patch twice
import_protocols()
once = snapshot()
emit("guarded", guarded())
keepalive_guard.install()          # after import: changes nothing
emit("changed_by_second_install", changed(once))
keepalive_guard.uninstall()        # one uninstall undoes it all
emit("guarded_after_uninstall", guarded())
emit("installed", keepalive_guard.status().installed)
""",
    )
    assert_guarded(r["guarded"], "installed twice before import")
    assert r["changed_by_second_install"] == []
    assert r["guarded_after_uninstall"] == {}, "double-wrapped: one uninstall left patches"
    assert r["installed"] is False


def test_uninstall_then_reinstall(workdir):
    r = script(
        workdir,
        """
import keepalive_guard
keepalive_guard.install()
keepalive_guard.uninstall()
import_protocols()                 # the import hook must do nothing now
emit("guarded_while_uninstalled", guarded())
emit("states_while_uninstalled", states(keepalive_guard.status()))
pristine = snapshot()
emit("states", states(keepalive_guard.install()))
emit("guarded", guarded())
keepalive_guard.uninstall()
emit("restored", changed(pristine))
keepalive_guard.install(fixes="E")
keepalive_guard.install()
emit("guarded_again", guarded())
keepalive_guard.uninstall()
emit("restored_again", changed(pristine))
""",
    )
    assert r["guarded_while_uninstalled"] == {}
    assert all(
        state == ("pending" if EXPECTED[key] == "applied" else EXPECTED[key])
        for key, state in r["states_while_uninstalled"].items()
    ), r["states_while_uninstalled"]
    assert r["states"] == EXPECTED
    assert_guarded(r["guarded"], "re-installed")
    assert_guarded(r["guarded_again"], "re-installed with another selection")
    assert r["restored"] == [] and r["restored_again"] == []


AUTO = """
import keepalive_guard.auto
emit("report_is_none", keepalive_guard.auto.report is None)
emit("protocols_loaded", classes() != [])
import_protocols()
emit("guarded", guarded())
emit("installed", keepalive_guard.status().installed)
emit("states", states(keepalive_guard.status()))
"""


def test_install_does_not_import_uvicorn(workdir):
    r = script(
        workdir,
        """
import keepalive_guard
keepalive_guard.install()
emit("loaded", sorted(m for m in ("uvicorn", "h11", "httptools") if m in sys.modules))
""",
    )
    assert r["loaded"] == [], "install() imported " + ", ".join(r["loaded"])


def test_import_auto(workdir):
    r = script(workdir, AUTO)
    assert r["report_is_none"] is False and r["protocols_loaded"] is False
    assert r["installed"] is True and r["states"] == EXPECTED
    assert_guarded(r["guarded"], "import keepalive_guard.auto")


@pytest.mark.parametrize("value", ["0", "off"])
def test_import_auto_turned_off(workdir, value):
    r = script(workdir, AUTO, env={"KEEPALIVE_GUARD": value})
    assert r["report_is_none"] is True
    assert r["installed"] is False and r["guarded"] == {}


def test_import_auto_honours_fix_selection(workdir):
    r = script(workdir, AUTO, env={"KEEPALIVE_GUARD_FIXES": "-E2"})
    want = dict(EXPECTED, **{"E2/h11": "disabled", "E2/httptools": "disabled"})
    assert r["states"] == want


# --- the zero-code route: KEEPALIVE_GUARD=1 and keepalive_guard.pth -------------------


def _site_dirs():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    return dirs + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _stale_files(installed, source):
    """Relative paths of .py files that differ between two copies of the package."""

    def files(root):
        out = {}
        for folder, _, names in os.walk(root):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as handle:
                        out[os.path.relpath(path, root)] = handle.read()
        return out

    a, b = files(installed), files(source)
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


@pytest.fixture(scope="module")
def installed_wheel():
    """Fail (never skip) unless keepalive_guard.pth is in this interpreter's site-packages."""
    dirs = _site_dirs()
    found = [d for d in dirs if os.path.isfile(os.path.join(d, "keepalive_guard.pth"))]
    if not found:
        pytest.fail(
            "keepalive_guard.pth is missing from site-packages ({}): {}".format(
                ", ".join(sorted(set(dirs))), INSTALL_HINT
            ),
            pytrace=False,
        )
    return found[0]


@pytest.fixture(scope="module", autouse=True)
def warn_if_wheel_is_stale():
    """These cases run the installed wheel: say so if it is not the source next door."""
    source = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keepalive_guard"
    )
    for folder in _site_dirs():
        installed = os.path.join(folder, "keepalive_guard")
        if os.path.isdir(installed) and os.path.isdir(source):
            stale = _stale_files(installed, source)
            for boot in ("_keepalive_guard_boot.py", "_keepalive_guard_hook.py"):
                here = os.path.join(source, os.pardir, boot)
                if _read(os.path.join(folder, boot)) != _read(here):
                    stale.append(boot)
            if stale:
                warnings.warn(
                    "the installed keepalive_guard differs from {} in {}: rebuild and reinstall "
                    "the wheel".format(source, ", ".join(stale)),
                    stacklevel=2,
                )
            return


PTH = """
emit("kg_loaded_at_start", "keepalive_guard" in sys.modules)
emit("uvicorn_loaded_at_start", "uvicorn" in sys.modules)
emit("protocols_loaded_at_start", classes() != [])
import_protocols()
emit("guarded", guarded())
kg = sys.modules.get("keepalive_guard")
if kg is not None:
    emit("file", kg.__file__)
    emit("states", states(kg.status(import_modules=False)))
"""


def test_env_route_patches_without_any_import(workdir, installed_wheel):
    r = script(workdir, PTH, env={"KEEPALIVE_GUARD": "1"})
    assert r["kg_loaded_at_start"] is True, (
        "keepalive_guard.pth did not load the guard: " + INSTALL_HINT
    )
    assert r["uvicorn_loaded_at_start"] is False, "the start-up hook imported uvicorn"
    assert os.path.realpath(r["file"]).startswith(os.path.realpath(installed_wheel) + os.sep), r[
        "file"
    ]
    assert r["states"] == EXPECTED
    assert_guarded(r["guarded"], "KEEPALIVE_GUARD=1")


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_env_route_off(workdir, installed_wheel, value):
    env = {} if value is None else {"KEEPALIVE_GUARD": value}
    r = script(workdir, PTH, env=env)
    assert r["kg_loaded_at_start"] is False, (
        "keepalive_guard imported with KEEPALIVE_GUARD={!r}".format(value)
    )
    assert r["uvicorn_loaded_at_start"] is False
    assert r["guarded"] == {}


IDLE_HOOK = """
def finder_name(finder):  # a module's name, else its class's (virtualenv has a _Finder too)
    kind = type(finder)
    return getattr(finder, "__name__", None) or kind.__module__ + "." + kind.__name__
emit("boot_loaded_at_start", "_keepalive_guard_boot" in sys.modules)
emit("finders_at_start", [finder_name(f) for f in sys.meta_path])
import uvicorn.main
try:
    import uvicorn.config
except ImportError:  # before 0.3.26: no Config, and no --http name to register
    emit("guarded_name", None)
else:
    emit("guarded_name", uvicorn.config.HTTP_PROTOCOLS.get("guarded"))
emit("boot_loaded_after_uvicorn", "_keepalive_guard_boot" in sys.modules)
emit("kg_loaded", "keepalive_guard" in sys.modules)
emit("finders_after", [finder_name(f) for f in sys.meta_path])
emit("protocols_loaded", classes() != [])
import keepalive_guard
keepalive_guard.install()
emit("finders_installed", [finder_name(f) for f in sys.meta_path])
import_protocols()
emit("httptools_loaded", "uvicorn.protocols.http.httptools_impl" in sys.modules)
emit("finders_patched", [finder_name(f) for f in sys.meta_path])
"""


def test_idle_start_up_hook_loads_nothing_until_uvicorn(workdir, installed_wheel):
    """Without KEEPALIVE_GUARD the .pth imports only the hook; importing uvicorn boots
    the hook, which registers the --http names without loading the package."""
    r = script(workdir, IDLE_HOOK, env={})
    assert r["boot_loaded_at_start"] is False
    assert r["finders_at_start"][0] == "_keepalive_guard_hook"
    assert r["boot_loaded_after_uvicorn"] is True
    assert r["guarded_name"] == (
        "keepalive_guard.protocols:AutoHTTPProtocol" if HAS_CONFIG else None
    )
    assert r["kg_loaded"] is False
    # Nothing awaited any more: no finder of ours stays on later imports...
    assert r["finders_after"] == [f for f in r["finders_at_start"] if f != "_keepalive_guard_hook"]
    # ...until install() registers wrapt's post-import hooks for the protocol modules still
    # to load (0.2.x's uvicorn.main imported them already: then none, and no wrapt), whose
    # finder stays; before 0.3.26 the boot's finder too: the server-log hook waits for a
    # uvicorn.config that the release does not have (uvicorn.main loaded without it).
    waiting = [] if HAS_CONFIG else ["_keepalive_guard_boot._Finder"]
    if r["protocols_loaded"]:
        assert r["finders_installed"] == waiting + r["finders_after"], r["finders_installed"]
    else:
        assert r["finders_installed"][0].endswith(".ImportHookFinder"), r["finders_installed"]
        assert r["finders_installed"][1:] == waiting + r["finders_after"]
    assert r["finders_patched"] == r["finders_installed"]


def test_env_route_with_misspelt_fixes_says_so_and_runs_unguarded(workdir, installed_wheel):
    env = {"KEEPALIVE_GUARD": "1", "KEEPALIVE_GUARD_FIXES": "C,X"}
    code, out, err = run(workdir, [sys.executable, "-c", PRELUDE + PTH], env=env)
    assert code == 0, err  # a start-up hook must not stop the interpreter...
    assert "unknown fix 'X'" in err and "Traceback" not in err, err  # ...but must say why
    assert "RESULT guarded {}" in out, out


def test_env_route_honours_fix_selection(workdir, installed_wheel):
    r = script(workdir, PTH, env={"KEEPALIVE_GUARD": "1", "KEEPALIVE_GUARD_FIXES": "E"})
    want = {k: (v if k.startswith("E/") else "disabled") for k, v in EXPECTED.items()}
    assert r["states"] == want


# --- the command line -------------------------------------------------------------------


def test_python_m_status_json(workdir):
    code, out, err = run(workdir, [sys.executable, "-m", "keepalive_guard", "status", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["installed"] is True
    assert report["selected"] == list(FIXES)
    assert {
        "{}/{}".format(s["fix"], s["implementation"]): s["state"] for s in report["fixes"]
    } == EXPECTED
    import uvicorn

    assert report["versions"]["uvicorn"] == uvicorn.__version__


def test_verbose_shows_every_decision_line(workdir):
    """``-v``: one line per loaded module on stderr, at INFO where a fix was
    applied and at DEBUG where none was (shown too: that is what -v is for)."""
    code, out, err = run(workdir, [sys.executable, "-m", "keepalive_guard", "-v", "status"])
    assert code == 0, err
    lines = [line for line in err.splitlines() if "keepalive-guard: uvicorn " in line]
    for impl in IMPLEMENTATIONS:  # those importable here
        mine = [line for line in lines if "({})".format(impl) in line]
        level = "INFO " if impl in GUARDED_IMPLS else "DEBUG "
        assert len(mine) == 1 and mine[0].startswith(level), err


def _console_script():
    path = os.path.join(os.path.dirname(sys.executable), "keepalive-guard")
    if not os.path.isfile(path):
        pytest.fail("console script {} is missing: {}".format(path, INSTALL_HINT), pytrace=False)
    return path


def test_check_ok_on_a_recognised_release(workdir, installed_wheel):
    import uvicorn

    code, out, err = run(workdir, [_console_script(), "check"])
    assert code == 0, "stdout:\n{}\nstderr:\n{}".format(out, err)
    assert out.startswith("keepalive-guard check: ok, uvicorn {}".format(uvicorn.__version__)), out
    if GUARDED_IMPLS:
        assert "applied" in out
    else:
        assert "applied" not in out and "fixed upstream" in out
    code, out, err = run(workdir, [_console_script(), "check", "--json"])
    assert code == 0 and json.loads(out)["ok"] is True


@pytest.mark.parametrize(
    "how",
    ["env", "argument"],
)
def test_check_misspelt_fixes(workdir, installed_wheel, how):
    if how == "env":
        args, env = [_console_script(), "check"], {"KEEPALIVE_GUARD_FIXES": "C,X"}
    else:
        args, env = [_console_script(), "check", "--fixes", "C,X"], {}
    code, out, err = run(workdir, args, env=env)
    assert code == 2, "stdout:\n{}\nstderr:\n{}".format(out, err)
    assert "Traceback" not in err and out == ""
    assert "unknown fix 'X'" in err and "C, D, E, E2" in err, err
    if how == "env":
        assert "KEEPALIVE_GUARD_FIXES" in err


# --- end to end: a real server started with KEEPALIVE_GUARD=1 and no code change ------------


def test_env_route_real_server_fixes_e(installed_wheel, http):
    with Server(
        http=http, guard="env", env={"KEEPALIVE_GUARD": "1"}, timeout_keep_alive=TIMEOUT
    ) as server:
        assert server.guard is not None, (
            "KEEPALIVE_GUARD=1 did not load keepalive_guard: " + INSTALL_HINT
        )
        assert server.guard["installed"] is True
        got = {s["fix"]: s["state"] for s in server.guard["fixes"] if s["implementation"] == http}
        assert got == {fix: expected(fix, http) for fix in ALL_FIXES}, server.log()
        # E, and A and B where the release is old enough to have had them
        bugs = [bug for bug in ("A", "B", "E") if expected(bug, http) != "not applicable"]
        scenarios = [s for s in SCENARIOS if s.bug in bugs and http in s.implementations]
        assert scenarios, "no scenario for {} on {}".format(bugs, http)
        broken = {s.name: s.count(server) for s in scenarios}
        log = server.log()
    assert set(broken.values()) == {0}, "bugs showed: {}\n{}".format(broken, log)
    assert "Exception in callback" not in log, log
