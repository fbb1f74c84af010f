"""Install keepalive-guard from its sdist, as a user without a wheel would.

    python3 compat/sdist_check.py                  # Python 3.6 and 3.13 (the oldest, newest)
    python3 compat/sdist_check.py --python 3.9     # others

Builds the sdist (``uv build --sdist``), then for each Python makes a fresh
``python -m venv`` (pip upgraded to the newest that runs there: a 3.6 venv's
bundled pip 18 ignores Requires-Python), installs the sdist with
``pip install --no-binary keepalive-guard --no-cache-dir`` (so pip builds it
with the project's own build backend on that Python), then checks that the
package and its dependencies import, that the start-up hook
(``keepalive_guard.pth``) ran, and that ``keepalive-guard status`` exits 0.
Exits 1 if any Python fails.  ``compat/run.py`` runs it once, before the cells.
Tooling (Python 3.9+, standard library only, plus uv which it installs).
"""

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
import interpreters  # noqa: E402

PYTHONS = ("3.6", "3.13")
PIP = {"3.6": "pip>=21,<22", "3.7": "pip<24.1"}  # the newest each old Python runs
T_STEP = 600
CHECK = (
    "import sys, keepalive_guard, packaging.version, wrapt\n"
    "assert '_keepalive_guard_hook' in sys.modules, 'keepalive_guard.pth did not run'\n"
    "print('keepalive-guard', keepalive_guard.__version__, 'on Python', sys.version.split()[0])\n"
)


def build_sdist(out: Path) -> Path:
    cmd = envs.ensure_uv() + ["build", "--sdist", "--out-dir", str(out), str(ROOT)]
    result = envs.run(cmd, timeout=T_STEP, cwd=ROOT)
    if result["rc"] != 0:
        raise RuntimeError("uv build --sdist failed:\n" + result["stderr"][-3000:])
    found = sorted(out.glob("keepalive_guard-*.tar.gz"))
    if len(found) != 1:
        raise RuntimeError("expected one sdist, got {}".format([p.name for p in found]))
    return found[0]


def check_python(minor: str, interpreter: str, sdist: Path, work: Path) -> "tuple":
    """(ok, text): one fresh venv, the sdist installed from source, the package used."""
    venv = work / ("venv-" + minor)
    python = str(venv / "bin" / "python")
    steps = [
        ("venv", [interpreter, "-m", "venv", str(venv)]),
        ("pip upgrade", [python, "-m", "pip", "install", "-q", PIP.get(minor, "pip")]),
        (
            "install",
            [python, "-m", "pip", "install", "-q", "--no-cache-dir"]
            + ["--no-binary", "keepalive-guard", str(sdist)],
        ),
        ("import", [python, "-c", CHECK]),
        ("status", [str(venv / "bin" / "keepalive-guard"), "status"]),
    ]
    lines = []
    for name, cmd in steps:
        result = envs.run(cmd, timeout=T_STEP, cwd=work)
        if result["rc"] != 0:
            detail = (result["stdout"] + result["stderr"])[-3000:]
            return False, "Python {}: {} failed (exit {}):\n{}".format(
                minor, name, result["rc"], detail
            )
        if name in ("import", "status"):
            lines.append(result["stdout"].strip().splitlines()[0])
    return True, "Python {}: installed from the sdist; {}".format(minor, "; ".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", help="3.X (repeatable; default: 3.6 and 3.13)")
    args = parser.parse_args(argv)
    minors = args.python or list(PYTHONS)
    found = interpreters.find_interpreters()
    missing = [m for m in minors if m not in found]
    if missing:
        print("sdist check: no Python {} found".format(", ".join(missing)), file=sys.stderr)
        return 1
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kg-sdist-") as tmp:
        work = Path(tmp)
        sdist = build_sdist(work / "dist")
        with ThreadPoolExecutor(max_workers=len(minors)) as pool:
            results = list(pool.map(lambda m: check_python(m, found[m], sdist, work), minors))
    for _, text in results:
        print("sdist check: " + text)
    ok = all(ok for ok, _ in results)
    print("sdist check: {} in {:.0f}s".format("ok" if ok else "FAILED", time.monotonic() - started))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
