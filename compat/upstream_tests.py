"""Run uvicorn's own tests/protocols suite of a release, without and then with the guard.

    python3 compat/upstream_tests.py --uvicorn 0.55.0             # Python 3.13, all,R4
    python3 compat/upstream_tests.py --uvicorn 0.55.0 --fixes all

Fetches the release's sdist from PyPI (``pip download --no-binary :all:
--no-deps``) and takes its ``tests/`` and ``pyproject.toml`` (uvicorn's
pytest settings: warnings are errors); builds an environment with that
release and this project's wheel (``envs.build_env``, in a cache of its own
under ``compat/.work/upstream-envs``, since the test dependencies are added
to it); then runs ``pytest tests/protocols`` twice: as it comes, and with
``-p _keepalive_guard_upstream``, a plugin that installs the guard (the
given fixes, every one by default, the opt-in R4 too) before any test
module imports uvicorn.  Prints both counts and exits non-zero unless the
guarded run passes everything the unguarded run passes and nothing fails
only with the guard.  Some sdists ship no tests (0.27.1's has only the
package): that is reported; ``--source DIR`` then takes ``tests/`` and
``pyproject.toml`` from a checkout of the release's tag instead (or from
another release's sdist, as a stand-in: then tests of features the release
lacks fail both ways, and only the comparison counts); ``--with REQ`` adds a
requirement (``'websockets<14'`` for releases that import websockets.legacy).
Tooling (Python 3.9+).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "upstream"
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
import interpreters  # noqa: E402

#: uvicorn's test dependencies that tests/protocols needs (its dev group, less tooling).
TEST_DEPS = (
    "pytest",
    "pytest-mock",
    "pytest-xdist",
    "anyio",
    "httpx",
    "httpx2",
    "trustme",
    "cryptography",
    "a2wsgi",
    "websockets",
    "wsproto",
    "httptools",
    "zttp",
)
PLUGIN = '''"""pytest plugin: install keepalive-guard before any test module imports uvicorn."""
import os

import keepalive_guard

keepalive_guard.install(fixes=os.environ["KEEPALIVE_GUARD_FIXES"])


def pytest_terminal_summary(terminalreporter):
    report = keepalive_guard.status(import_modules=False)
    applied = sorted(s.fix + " (" + s.implementation + ")" for s in report.applied)
    terminalreporter.write_line("keepalive-guard applied: " + (", ".join(applied) or "nothing"))
'''
SUMMARY = re.compile(r"^=* ?(\d+ \w+.*) in [0-9.]+s")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
RUN_TIMEOUT = 30 * 60


def fetch_tests(release):
    """The release's tests/ and pyproject.toml, from its sdist; None if it ships no tests."""
    target = WORK / release
    if (target / "tests" / "protocols").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        + ["--dest", str(WORK), "uvicorn=={}".format(release)],
        check=True,
        timeout=300,
    )
    sdist = WORK / "uvicorn-{}.tar.gz".format(release)
    prefix = "uvicorn-{}/".format(release)
    with tarfile.open(str(sdist)) as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
        ]
        for member in members:
            member.name = member.name[len(prefix) :]
            archive.extract(member, str(target))
    return target if (target / "tests" / "protocols").is_dir() else None


def copy_tests(release, source):
    """tests/ and pyproject.toml from a source checkout of the release."""
    target = WORK / "{}-source".format(release)
    if target.exists():
        shutil.rmtree(str(target))
    shutil.copytree(str(Path(source) / "tests"), str(target / "tests"))
    shutil.copy(str(Path(source) / "pyproject.toml"), str(target / "pyproject.toml"))
    return target if (target / "tests" / "protocols").is_dir() else None


def counts(output):
    """{"passed": n, ...} from pytest's summary line."""
    for line in reversed(output.splitlines()):
        match = SUMMARY.match(line.strip())
        if match:
            found = {}
            for number, word in COUNT.findall(match.group(1)):
                found["errors" if word.startswith("error") else word] = int(number)
            return found
    return {}


def failures(output):
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)))


def run_suite(python, tests_dir, fixes):
    env = envs._uv_env()
    env["PYTHONPATH"] = str(tests_dir)
    # uvicorn's own addopts run 8 xdist workers: one process here, the one
    # the plugin installed the guard in (and reports from).
    args = [python, "-m", "pytest", "tests/protocols", "-q", "-n", "0", "-p", "no:cacheprovider"]
    if fixes is not None:
        env["KEEPALIVE_GUARD_FIXES"] = fixes
        args += ["-p", "_keepalive_guard_upstream"]
    proc = subprocess.run(
        args,
        cwd=str(tests_dir),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    return proc.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uvicorn", required=True, help="release, e.g. 0.55.0")
    parser.add_argument("--python", default="3.13", help="3.X (default %(default)s)")
    parser.add_argument("--fixes", default="all,R4", help="guard selection (default %(default)s)")
    parser.add_argument("--source", default=None, help="a checkout of the release's tag")
    parser.add_argument(
        "--with",
        dest="extra",
        action="append",
        default=[],
        metavar="REQ",
        help="another requirement for the test environment, e.g. 'websockets<14' (repeatable)",
    )
    args = parser.parse_args(argv)

    tests_dir = copy_tests(args.uvicorn, args.source) if args.source else fetch_tests(args.uvicorn)
    if tests_dir is None:
        print(
            "uvicorn {}: no tests/protocols in {}".format(
                args.uvicorn, args.source or "its sdist (try --source)"
            )
        )
        return 2
    (tests_dir / "_keepalive_guard_upstream.py").write_text(PLUGIN)
    python = interpreters.find_interpreters().get(args.python, args.python)
    wheel = envs.build_wheel(HERE.parent, HERE / ".work" / "dist")
    info = envs.build_env(args.uvicorn, python, wheel, cache=HERE / ".work" / "upstream-envs")
    installed = envs.run(
        envs.ensure_uv()
        + ["pip", "install", "--python", info["python"]]
        + list(TEST_DEPS)
        + args.extra,
        timeout=600,
        env=envs._uv_env(),
    )
    if installed["rc"] != 0:
        print("installing the test dependencies failed:\n{}".format(installed["stderr"]))
        return 2
    results = {}
    for label, fixes in (("without the guard", None), ("with the guard", args.fixes)):
        output = run_suite(info["python"], tests_dir, fixes)
        applied = re.findall(r"^keepalive-guard applied: .*$", output, re.MULTILINE)
        results[label] = (counts(output), failures(output), applied)
        log = WORK / "{}-{}.log".format(args.uvicorn, "guard" if fixes else "plain")
        log.write_text(output)
        print(
            "uvicorn {} tests/protocols {}: {} (log: {}){}".format(
                args.uvicorn,
                label,
                results[label][0] or "no summary",
                log,
                "".join("\n  " + line for line in applied),
            )
        )
    (plain, plain_failed, _), (guarded, guarded_failed, applied) = results.values()
    only_guarded = sorted(set(guarded_failed) - set(plain_failed))
    for name in only_guarded:
        print("  fails only with the guard: {}".format(name))
    patched = bool(applied) and not applied[0].endswith(": nothing")
    if not patched:
        print("  the guard patched nothing: this run proves nothing")
    if not plain.get("passed"):
        print("  nothing passed without the guard: this run proves nothing")
    ok = (
        patched
        and plain.get("passed", 0) > 0
        and guarded.get("passed", 0) >= plain.get("passed", 0)
        and not only_guarded
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
