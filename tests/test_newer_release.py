"""A uvicorn release newer than any this build studied, made from the installed one.

The installed uvicorn package is copied and its ``__version__`` set to
0.99.0 (methods unchanged), beside a ``uvicorn-0.99.0.dist-info`` as an
install of that release has (0.2.x's ``uvicorn/__init__`` imports the
protocol modules before it sets ``__version__``: the guard reads the
version there then), then shadows the real one on ``PYTHONPATH``
for ``python -m keepalive_guard status --json`` and ``check``: what upstream
fixed is "fixed upstream" with no WARNING and ``check`` exits 0.  The same
copy with one method altered, that a fix decided by code inspects, gives
one WARNING naming the method.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import uvicorn
from conftest import FIRST_BROKEN, FIRST_FIXED, IMPLEMENTATIONS, NEVER, OPT_IN, has_bug

from keepalive_guard.fingerprint import studied
from keepalive_guard.fixes import CATALOGUE
from keepalive_guard.implementations import IMPLEMENTATIONS as IMPLS
from keepalive_guard.implementations import parse_version

NEWER = "0.99.0"
#: A copy of the newest studied release is the realistic "next release"; an
#: older release's code under NEWER's number is checked for what upstream fixed.
NEWEST = uvicorn.__version__ == studied()[-1]


def _copy(tmp_path, alter=None):
    """A copy of the installed uvicorn saying it is NEWER; ``alter``: (impl, Class.method)."""
    target = tmp_path / "uvicorn"
    shutil.copytree(os.path.dirname(uvicorn.__file__), str(target))
    found = 0
    for source in target.glob("*.py"):  # __init__.py, or _version.py (0.55.0)
        text, count = re.subn(
            r"""^(__version__ = (?:VERSION = )?)["'][^"']+["']""",
            r'\g<1>"{}"'.format(NEWER),
            source.read_text(),
            flags=re.M,
        )
        if count:
            source.write_text(text)
            found += count
    assert found == 1, "no single __version__ line in {}".format(target)
    info = tmp_path / "uvicorn-{}.dist-info".format(NEWER)
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: uvicorn\nVersion: {}\n".format(NEWER)
    )
    if alter is not None:
        impl, key = alter
        modules = next(i for i in IMPLS if i.name == impl).modules  # h11 / h11_impl
        paths = [tmp_path.joinpath(*m.split(".")).with_suffix(".py") for m in modules]
        path = next(p for p in paths if p.exists())
        class_name, method = key.split(".")
        with path.open("a") as f:  # a distro's patch of one method
            f.write(
                "\n\ndef _altered(self, *args, **kwargs):\n    return None\n\n"
                "{}.{} = _altered\n".format(class_name, method)
            )
    return str(tmp_path)


def _run(path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_GUARD")}
    env["PYTHONPATH"] = path
    proc = subprocess.Popen(  # not run(text=...): the tests run on Python 3.6 too
        [sys.executable, "-m", "keepalive_guard"] + list(args),
        cwd=path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_newer_release_keeps_what_upstream_fixed(tmp_path):
    path = _copy(tmp_path)
    code, out, err = _run(path, "status", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["versions"]["uvicorn"] == NEWER
    for s in report["fixes"]:
        first_fixed = FIRST_FIXED[s["fix"]][s["implementation"]]
        if s["implementation"] not in IMPLEMENTATIONS or first_fixed is None:
            assert s["state"] == "not applicable", s
        elif first_fixed == NEVER:  # no upstream fix: the code decides
            if NEWEST:  # the newest release's code, unchanged: studied
                assert s["state"] == ("disabled" if s["fix"] in OPT_IN else "applied"), s
        else:
            assert s["state"] == "fixed upstream", s
            assert "newer than the releases studied" in s["reason"], s
    code, out, err2 = _run(path, "check")
    assert code == 0, out + err2
    assert out.startswith("keepalive-guard check: ok"), out + err2
    if NEWEST:  # an older release's code under a newer number is rightly not all recognised
        assert "WARNING" not in err + err2, err + err2


def _code_decided():
    """(fix, impl, Class.method): a default fix without an upstream fix inspects it on NEWER."""
    version = parse_version(NEWER)
    for fix in CATALOGUE.values():
        for impl in IMPLEMENTATIONS:
            if fix.default and fix.is_broken(impl, version):
                return fix.id, impl, fix.inspects(impl, version)[0]
    return None


def test_newer_release_with_an_altered_method_warns_once(tmp_path):
    decided = _code_decided()
    if decided is None:
        pytest.fail("no fix is decided by code on a newer release: nothing to alter")
    fix, impl, method = decided
    if not has_bug(fix, impl):  # 0.2.0-0.2.20: no keep-alive timer, no R bug
        pytest.skip(
            "uvicorn {} has no bug {} (from {}): unaltered, its code already is not what "
            "{} inspects".format(uvicorn.__version__, fix, FIRST_BROKEN[fix], fix)
        )
    alter = impl, method
    path = _copy(tmp_path, alter)
    code, out, err = _run(path, "check")
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, err
    assert alter[1] in warnings[0], warnings
    assert code == 0, "an R fix left out on unknown code fails only check --strict\n" + err
    code, out, err = _run(path, "check", "--strict")
    assert code == 1, out + err
