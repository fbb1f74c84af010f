"""Run the test suite against real uvicorn releases, each in its own environment.

The README's test command is ``python3 compat/run.py``: it lints, builds the
keepalive-guard wheel, builds (or reuses) one uv environment per cell
(uvicorn release x CPython) with that wheel installed, and runs
``pytest tests`` inside each, in parallel up to the core count.  It exits
non-zero if any cell fails or cannot be built, or if an interpreter a cell
needs is missing (``--allow-missing`` reports those cells as skipped).

    python3 compat/run.py                        # the quick set (default)
    python3 compat/run.py --cells 0.12.2@3.11    # chosen cells
    python3 compat/run.py -- -k test_bugs        # extra pytest arguments

Tooling (Python 3.9+, standard library only, plus uv which it installs).
"""

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
import fingerprints  # noqa: E402
import interpreters  # noqa: E402
import sdist_check  # noqa: E402

#: One release per code family, the boundary releases on both sides of the
#: upstream fixes (C and D's 0.12.3 is left to the matrix), the oldest Pythons users
#: are stuck on (3.6, 3.7), and the
#: newest studied release (the last of fingerprints.txt's ``releases`` line,
#: so that ``compat/fingerprints.py add-release X`` moves it) on 3.13.
QUICK = (
    ("0.2.5", "3.6"),
    ("0.2.6", "3.6"),
    ("0.3.26", "3.6"),
    ("0.3.27", "3.6"),
    ("0.10.9", "3.11"),
    ("0.11.0", "3.6"),
    ("0.16.0", "3.6"),
    ("0.12.2", "3.11"),
    ("0.22.0", "3.7"),
    ("0.27.0", "3.11"),
    ("0.27.1", "3.12"),
    ("0.52.4", "3.13"),
    ("0.53.0", "3.13"),
    (fingerprints.studied_releases()[-1], "3.13"),
)
RUFF = "ruff==0.17.6"
CELL_TIMEOUT = 15 * 60
SUMMARY = re.compile(r"^=* ?(\d+ \w+(?:, \d+ \w+)*) in [0-9.]+s")


def parse_cells(text):
    cells = []
    for item in text.replace(",", " ").split():
        release, _, python = item.partition("@")
        if not python:
            raise SystemExit("cell {!r}: write RELEASE@PYTHON, e.g. 0.12.2@3.11".format(item))
        cells.append((release, python))
    return cells


def lint():
    uv = envs.ensure_uv()
    for args in (["check"], ["format", "--check"]):
        paths = [
            "keepalive_guard",
            "_keepalive_guard_boot.py",
            "_keepalive_guard_hook.py",
            "tests",
            "compat",
        ]
        cmd = uv + ["tool", "run", RUFF] + args + paths
        result = subprocess.run(cmd, cwd=str(ROOT), timeout=300)
        if result.returncode != 0:
            return False
    return True


def counts(output):
    """pytest's closing summary as a dict: {'passed': 12, 'failed': 1, ...}."""
    found = {}
    for line in output.splitlines():
        match = SUMMARY.search(line)
        if match:
            found = {}
            for part in match.group(1).split(","):
                number, _, word = part.strip().partition(" ")
                if number.isdigit():
                    found[word.rstrip("s") if word.endswith("errors") else word] = int(number)
    return found


def run_cell(release, python, wheel, pytest_args, found):
    name = "{}@{}".format(release, python)
    log = WORK / "logs" / (name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if python not in found:
        return {"cell": name, "state": "skipped", "why": "no Python {} found".format(python)}
    try:
        info = envs.build_env(release, found[python], wheel)
    except Exception as exc:  # noqa: BLE001 - any build failure fails the cell
        log.write_text(str(exc))
        return {"cell": name, "state": "failed", "why": "environment: {}".format(exc)}
    pytest = str(Path(info["python"]).parent / "pytest")
    cmd = [pytest, "tests", "-q", "-p", "no:cacheprovider"] + list(pytest_args)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    try:
        result = subprocess.run(
            cmd,
            cwd=str(ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=CELL_TIMEOUT,
        )
        output, code = result.stdout.decode("utf-8", "replace"), result.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = (exc.stdout or b"").decode("utf-8", "replace") + "\nTIMEOUT", -1
    log.write_text(output)
    tally = counts(output)
    ok = code == 0 and tally.get("passed", 0) > 0
    return {
        "cell": name,
        "state": "passed" if ok else "failed",
        "why": "" if ok else "pytest exit {}; log {}".format(code, log.relative_to(ROOT)),
        "counts": tally,
        "seconds": round(time.monotonic() - start),
        "installed": info.get("versions", {}),
        "recipe": info.get("recipe"),
        "tail": "" if ok else "\n".join(output.splitlines()[-40:]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", help="RELEASE@PYTHON list (default: the quick set)")
    # One more cell than cores: a cell mostly waits on its servers' timers.
    parser.add_argument("--jobs", type=int, default=(os.cpu_count() or 1) + 1)
    parser.add_argument("--no-lint", action="store_true", help="skip ruff")
    parser.add_argument(
        "--allow-missing", action="store_true", help="missing Pythons: skip, not fail"
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    cells = parse_cells(args.cells) if args.cells else list(QUICK)
    started = time.monotonic()

    if not args.no_lint and not lint():
        print("compat: ruff found problems", file=sys.stderr)
        return 1
    if not args.cells and sdist_check.main([]) != 0:  # the default (CI) run only
        return 1
    wheel = envs.build_wheel(ROOT, WORK / "dist")
    found = interpreters.find_interpreters()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(
            pool.map(lambda cell: run_cell(cell[0], cell[1], wheel, args.pytest_args, found), cells)
        )

    totals = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    print(
        "\n{:<14} {:<8} {:>6} {:>6} {:>6}  {}".format(
            "cell", "result", "pass", "fail", "secs", "installed"
        )
    )
    for r in results:
        c = r.get("counts", {})
        for key in totals:
            totals[key] += c.get(key, 0)
        installed = ", ".join(
            "{} {}".format(k, v)
            for k, v in sorted(r.get("installed", {}).items())
            if k in ("uvicorn", "h11", "httptools")
        )
        print(
            "{:<14} {:<8} {:>6} {:>6} {:>6}  {}".format(
                r["cell"],
                r["state"],
                c.get("passed", "-"),
                c.get("failed", 0) + c.get("error", 0),
                r.get("seconds", "-"),
                installed or r["why"],
            )
        )
    for r in results:
        if r["state"] == "failed":
            print("\n--- {} failed: {}\n{}".format(r["cell"], r["why"], r.get("tail", "")))
    missing = [r for r in results if r["state"] == "skipped"]
    failed = [r for r in results if r["state"] == "failed"]
    print(
        "\ncompat: {} cells in {:.0f}s; {} failed, {} skipped (no interpreter)".format(
            len(results), time.monotonic() - started, len(failed), len(missing)
        )
    )
    print(
        "total: {} passed, {} failed".format(totals["passed"], totals["failed"] + totals["error"])
    )
    if failed or (missing and not args.allow_missing):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
