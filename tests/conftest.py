"""What the installed environment offers, and what BUGS.md says it should show.

The expectations here are an oracle independent of keepalive_guard's own
decision code: first fixed release per bug and implementation, straight from
../shared/BUGS.md.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from packaging.version import Version  # noqa: E402

#: No upstream release has the fix (BUGS.md, "Still broken in the newest release").
NEVER = "never"

FIRST_FIXED = {
    "A": {"h11": "0.2.6", "httptools": "0.2.6"},
    "B": {"h11": "0.3.27", "httptools": "0.3.27"},
    "C": {"h11": "0.12.3", "httptools": "0.12.3"},
    "D": {"h11": "0.12.3", "httptools": "0.12.3"},
    "E": {"h11": "0.27.1", "httptools": "0.27.1"},
    "E2": {"h11": "0.53.0", "httptools": None},
    "R1": {"h11": None, "httptools": NEVER},
    "R2": {"h11": None, "httptools": NEVER},
    "R3": {"h11": NEVER, "httptools": NEVER},
    "R4": {"h11": NEVER, "httptools": NEVER},
    "R5": {"h11": NEVER, "httptools": NEVER},
}
#: Fixes only an explicit selection turns on (not "all").
OPT_IN = ("R4",)


#: The first release with each bug (BUGS.md): A from the oldest release in
#: scope, the rest from 0.2.21 (no keep-alive timer or message_event before;
#: the R races are in the timer's and the pipeline's code).
FIRST_BROKEN = dict(
    {bug: "0.2.21" for bug in FIRST_FIXED},
    A="0.2.0",
    R2="0.3.0",  # covered from there (the fix modules say why): "not applicable" before
    R5="0.3.3",
)


def uvicorn_version():
    import uvicorn

    return Version(uvicorn.__version__)


def has_bug(bug, http):
    """True if the installed release has ``bug`` on ``http`` (BUGS.md)."""
    first_fixed = FIRST_FIXED[bug][http]
    if first_fixed is None or uvicorn_version() < Version(FIRST_BROKEN[bug]):
        return False
    return first_fixed == NEVER or uvicorn_version() < Version(first_fixed)


def any_bug(http):
    """True if the installed release has any of the bugs on ``http`` the default selection fixes.

    Then the guard, installed as it comes, patches that implementation.
    """
    return any(has_bug(bug, http) for bug in FIRST_FIXED if bug not in OPT_IN)


def protocol_module(impl):
    """uvicorn's ``impl`` module: ``h11_impl`` / ``httptools_impl`` from 0.2.17,
    ``h11`` / ``httptools`` before; None if it cannot be imported here."""
    import importlib

    for name in ("uvicorn.protocols.http.{}_impl", "uvicorn.protocols.http.{}"):
        try:
            return importlib.import_module(name.format(impl))
        except ImportError as exc:
            if not name.format(impl).startswith(getattr(exc, "name", None) or "-"):
                return None  # the module exists but does not import here
    return None


def expected_state(fix, http):
    """The guard's state for ``fix`` on ``http`` by the oracle, once the module is loaded."""
    if FIRST_FIXED[fix][http] is None or uvicorn_version() < Version(FIRST_BROKEN[fix]):
        return "not applicable"
    return "applied" if has_bug(fix, http) else "fixed upstream"


#: releases before 0.6.0 call ASGI 2 applications and adapt nothing
APP = "keepalive_guard.verify.app:" + (
    "app" if uvicorn_version() >= Version("0.6.0") else "ASGI2App"
)
#: What the release can have (README's route table): a keep-alive timer and
#: --timeout-keep-alive from 0.2.21; uvicorn.config (Config(http=<class>),
#: uvicorn.run(app, http=<class>), the --http names) from 0.3.26; --lifespan
#: from 0.4.0; --workers and --reload from 0.5.0; ``python -m uvicorn`` from 0.9.1.
HAS_TIMER = uvicorn_version() >= Version("0.2.21")
HAS_CONFIG = uvicorn_version() >= Version("0.3.26")
HAS_CHILDREN = uvicorn_version() >= Version("0.5.0")
NO_CONFIG = "uvicorn {} has no uvicorn.config (from 0.3.26)".format(uvicorn_version())
NO_CHILDREN = "uvicorn {} has no --workers / --reload (from 0.5.0)".format(uvicorn_version())
NO_TIMER = "uvicorn {} has no --timeout-keep-alive (from 0.2.21)".format(uvicorn_version())

#: ``python -m uvicorn`` from 0.9.1; before, uvicorn.main's click command
UVICORN = [sys.executable] + (
    ["-m", "uvicorn"]
    if uvicorn_version() >= Version("0.9.1")
    else ["-c", "import sys; from uvicorn.main import main; sys.argv[0] = 'uvicorn'; main()"]
)
#: --lifespan from 0.4.0; --disable-lifespan before (from 0.3.2x), nothing before that
LIFESPAN_OFF = (
    ["--lifespan", "off"]
    if uvicorn_version() >= Version("0.4.0")
    else ["--disable-lifespan"]
    if HAS_CONFIG
    else []
)
#: --timeout-keep-alive from 0.2.21, --no-access-log from 0.3.3
TIMER_ARGS = ["--timeout-keep-alive", "1"] if HAS_TIMER else []
QUIET = ["--no-access-log"] if uvicorn_version() >= Version("0.3.3") else []
#: uvicorn 0.3.26-0.3.27's own workers use Config without importing it: no worker starts
GUNICORN_BROKEN = Version("0.3.26") <= uvicorn_version() < Version("0.3.28")
NO_GUNICORN = "uvicorn {}'s gunicorn workers cannot start".format(uvicorn_version())
#: uvicorn.run("mod:app", lifespan=...) from 0.4.0 (before: run(**kwargs), no lifespan)
HAS_RUN_STRING = uvicorn_version() >= Version("0.4.0")
NO_RUN_STRING = 'uvicorn {} has no uvicorn.run("mod:app", lifespan=...) (from 0.4.0)'.format(
    uvicorn_version()
)


def uvicorn_argv(*extra):
    """``python -m uvicorn`` with the suite's settings; the port comes last."""

    def argv(port):
        return (
            UVICORN
            + [APP, "--host", "127.0.0.1", "--port", str(port), "--loop", "asyncio"]
            + LIFESPAN_OFF
            + TIMER_ARGS
            + QUIET
            + list(extra)
        )

    return argv


def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


IMPLEMENTATIONS = ["h11"] + (["httptools"] if _importable("httptools") else [])


@pytest.fixture(params=IMPLEMENTATIONS)
def http(request):
    return request.param


def pytest_report_header(config):
    import h11
    import uvicorn

    httptools = sys.modules.get("httptools")
    return "uvicorn {}, h11 {}, httptools {}, implementations {}".format(
        uvicorn.__version__,
        h11.__version__,
        getattr(httptools, "__version__", "not installed"),
        ", ".join(IMPLEMENTATIONS),
    )
