"""The compatibility matrix: keepalive-guard on every studied uvicorn release.

Issues #3, #19, #20, #22.  For every release in the ``releases`` line of
``keepalive_guard/fingerprints.txt`` (0.2.0 to the newest studied, with the
pre- and .post releases, without the yanked 0.17.0), on the oldest and the
newest CPython the release supports here (``interpreters.supported_pythons``),
this builds (or reuses) the release's environment with ``envs.build_env`` and
runs, inside it, with every fix selected, the opt-in R4 too (``--fixes
all,R4``; ``--fixes`` here changes that):

* ``python -m keepalive_guard status --json``: each fix's decision per
  implementation, cross-checked against BROKEN below (an independent copy of
  BUGS.md's ranges);
* ``python -m keepalive_guard verify --json``: each applicable bug reproduced
  without the guard and checked with it (asyncio loop);
* the same with ``--loop uvloop`` where uvloop installs and starts (uvloop is
  put in a separate ``--target`` directory on PYTHONPATH, never into the
  shared environment; releases that already bring uvloop use their own).

A cell is

* ``green``: decisions as expected, every applicable bug reproduced without
  the guard and fixed with it on every loop that ran;
* ``flagged``: green, except that an applicable bug did not reproduce without
  the guard (the check lost its teeth) on the retry too;
* ``failed``: the environment cannot be built, a decision is missing,
  unrecognised or differs from BROKEN, verify's applicable set differs from
  the expected one, a scenario errors, or the guard did not fix an applicable
  bug (after the retry);
* ``skipped``: no interpreter for that Python here (never a pass).

A verify run that shows any problem is repeated (``--retries``, default 1);
if the repeat is clean the cell keeps its state and is marked flaky, with both
attempts recorded.

    python3 compat/matrix.py                          # the full matrix
    python3 compat/matrix.py --release 0.13.4         # one release (both cells)
    python3 compat/matrix.py --python 3.6             # every cell on 3.6
    python3 compat/matrix.py --cells 0.13.4@3.6,0.55.0@3.13
    python3 compat/matrix.py --force --jobs 3         # ignore reusable results
    python3 compat/matrix.py --report                 # only rewrite RESULTS.md

A new uvicorn release joins the matrix with ``python3 compat/fingerprints.py
add-release X``, which runs its cells too.

Results: compat/results.json (every cell, machine-readable) and
compat/RESULTS.md (the table).  A cell whose inputs (release, interpreter
version, the package's files, environment recipe, fix selection, expected
decisions, MATRIX_VERSION) are unchanged is reused from results.json unless
``--force``; failed and skipped cells are always run again.  The package's
files are what its wheel installs plus the metadata pyproject.toml gives it,
without the README (the wheel's long description): a README edit reruns
nothing.  Exits 1 if any selected cell failed.

Tooling (Python 3.9+, standard library plus ``packaging``, and uv which
envs.py installs).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
import fingerprints  # noqa: E402
import interpreters  # noqa: E402

#: Bump when the procedure of a cell (what is run, how it is judged) changes:
#: it is part of every cell's key, so results from an older procedure are redone.
MATRIX_VERSION = "3"

IMPLS = ("h11", "httptools")

#: Per fix and implementation, (first broken release, first fixed release or
#: None: no upstream fix), or None: the bug does not exist there.  BUGS.md's
#: tables; the R races begin where the keep-alive timer and the shared
#: message_event appear (0.2.21) and run to the newest release.  Before the
#: first broken release the bug cannot exist ("not applicable").
#: Deliberately not taken from the package: this is the independent check.
BROKEN = {
    "A": {"h11": ("0.2.0", "0.2.6"), "httptools": ("0.2.0", "0.2.6")},
    "B": {"h11": ("0.2.21", "0.3.27"), "httptools": ("0.2.21", "0.3.27")},
    "C": {"h11": ("0.2.21", "0.12.3"), "httptools": ("0.2.21", "0.12.3")},
    "D": {"h11": ("0.2.21", "0.12.3"), "httptools": ("0.2.21", "0.12.3")},
    "E": {"h11": ("0.2.21", "0.27.1"), "httptools": ("0.2.21", "0.27.1")},
    "E2": {"h11": ("0.2.21", "0.53.0"), "httptools": None},
    "R1": {"h11": None, "httptools": ("0.2.21", None)},
    # R2 and R5 are covered from 0.3.0 and 0.3.3 (see the fix modules: before
    # them the upgrade is a module function, and a response timeout holds every
    # request's protocol too); the package reports "not applicable" with why.
    "R2": {"h11": None, "httptools": ("0.3.0", None)},
    "R3": {"h11": ("0.2.21", None), "httptools": ("0.2.21", None)},
    "R4": {"h11": ("0.2.21", None), "httptools": ("0.2.21", None)},
    "R5": {"h11": ("0.3.3", None), "httptools": ("0.3.3", None)},
}
FIXES = tuple(BROKEN)

#: The selection status and verify run with (``--fixes``): every fix, the
#: opt-in R4 too ("all" is every fix but R4, as in the package).
DEFAULT_SELECTION = "all,R4"
SELECTION = DEFAULT_SELECTION

APPLIED, FIXED_UPSTREAM, NOT_APPLICABLE = "applied", "fixed upstream", "not applicable"
DISABLED = "disabled"

#: uvicorn <= 0.13.4 does not start with uvloop >= 0.22 (UVICORN-HISTORY.md).
UVLOOP_CAP_UPTO = (0, 13, 4)
UVLOOP_CAP = "<0.22"

# Timeouts (seconds) of every subprocess this file starts.
T_STATUS = 120
T_VERIFY = 360  # verify takes ~20 s; generous for a loaded machine
T_UVLOOP_INSTALL = 600
T_PROBE = 120
T_GIT = 30

GREEN, FLAGGED, FAILED, SKIPPED = "green", "flagged", "failed", "skipped"
#: Releases on the index that cannot be installed or cannot serve (studied from source only).
UNINSTALLABLE = dict(
    {
        release: "uvicorn %s cannot be installed: its sdist (the only file published) does not "
        "build, its setup.py reads a README.md it does not ship" % release
        for release in ("0.2.0", "0.2.1")
    },
    **{
        "0.4.0": "uvicorn 0.4.0 cannot serve: its Config imports uvicorn.lifespan, a package "
        "its distribution does not ship (ModuleNotFoundError)"
    },
)

_print_lock = threading.Lock()
_save_lock = threading.Lock()


# --------------------------------------------------------------------------
# releases and the independent expectation


def releases() -> list:
    """The ``releases`` line of keepalive_guard/fingerprints.txt (PEP 440 order)."""
    return fingerprints.studied_releases()


def selected(selection: str) -> set:
    """The fix ids a selection names (the package's syntax: all, NAME, -NAME)."""
    tokens = selection.replace(",", " ").split()
    chosen = set(FIXES) if tokens and tokens[0].startswith("-") else set()
    for token in tokens:
        name = token.lstrip("-").upper()
        names = set(FIXES) - {"R4"} if name == "ALL" else {name}
        chosen = chosen - names if token.startswith("-") else chosen | names
    return chosen


def same_release(reported, release: str) -> bool:
    """PEP 440 equality: 0.7.0b1's own __version__ says "0.7.0.b1"."""
    try:
        return reported is not None and Version(reported) == Version(release)
    except ValueError:  # InvalidVersion
        return False


def expected_state(fix: str, impl: str, release: str) -> str:
    if fix not in selected(SELECTION):
        return DISABLED
    span = BROKEN[fix][impl]
    if span is None or Version(release) < Version(span[0]):
        return NOT_APPLICABLE
    fixed = span[1]
    return APPLIED if fixed is None or Version(release) < Version(fixed) else FIXED_UPSTREAM


def expected_decisions(release: str) -> dict:
    return {impl: {fix: expected_state(fix, impl, release) for fix in FIXES} for impl in IMPLS}


def matrix_cells(release_list) -> list:
    """[(release, minor, roles)] for the oldest and newest supported Python of each release."""
    cells = []
    for release in release_list:
        supported = interpreters.supported_pythons(release)
        oldest, newest = supported[0], supported[-1]
        if oldest == newest:
            cells.append((release, oldest, ["oldest", "newest"]))
        else:
            cells.append((release, oldest, ["oldest"]))
            cells.append((release, newest, ["newest"]))
    return cells


# --------------------------------------------------------------------------
# subprocesses


run = envs.run  # every subprocess here: bounded, its process group killed on timeout


def tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def clean_env(extra_pythonpath=None) -> dict:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("KEEPALIVE_GUARD") or name in (
            "PYTHONPATH",
            "PYTHONHOME",
            "VIRTUAL_ENV",
            "PYTHONSTARTUP",
            "PYTHONASYNCIODEBUG",
        ):
            del env[name]
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra_pythonpath:
        env["PYTHONPATH"] = str(extra_pythonpath)
    return env


def parse_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")
        return json.loads(text[start:]) if start >= 0 else None


# --------------------------------------------------------------------------
# one cell


def package_sha256(wheel) -> str:
    """sha256 of what the wheel installs and what pyproject.toml declares, not the README.

    Every file but the .dist-info, plus the METADATA headers (name, version,
    dependencies, Requires-Python: pyproject.toml's part) without its body
    (README.md) and entry_points.txt.  RECORD holds hashes of METADATA: left out.
    """
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            data = archive.read(name)
            if name.endswith(".dist-info/METADATA"):
                data = data.split(b"\n\n", 1)[0]
            elif ".dist-info/" in name and not name.endswith("/entry_points.txt"):
                continue
            digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def cell_key(release, pyinfo, package_sha) -> tuple:
    """(key, inputs): what a cell's result depends on."""
    inputs = {
        "release": release,
        "python": pyinfo["version"],
        "interpreter": os.path.realpath(pyinfo["executable"]),
        "package_sha256": package_sha,
        "env_recipe": {
            "recipe_version": envs.RECIPE_VERSION,
            "recipes": list(envs.RECIPES),
            "extras": list(envs.EXTRA_PACKAGES),
        },
        "matrix_version": MATRIX_VERSION,
        "selection": SELECTION,
        "expected": expected_decisions(release),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(), inputs


def check_decisions(status: dict, release: str) -> tuple:
    """(decisions {impl: {fix: {state, reason}}}, problems [str])."""
    decisions = {impl: {} for impl in IMPLS}
    for item in status.get("fixes", []):
        decisions.setdefault(item["implementation"], {})[item["fix"]] = {
            "state": item["state"],
            "reason": item["reason"],
        }
    problems, missing = [], []
    expected = expected_decisions(release)
    for impl in IMPLS:
        for fix in FIXES:
            got = decisions.get(impl, {}).get(fix)
            want = expected[impl][fix]
            if got is None:
                missing.append("%s/%s" % (fix, impl))
            elif got["state"] == "unrecognised":
                problems.append("%s/%s: unrecognised (%s)" % (fix, impl, got["reason"]))
            elif got["state"] != want:
                problems.append(
                    "%s/%s: decision %r, BUGS.md expects %r (%s)"
                    % (fix, impl, got["state"], want, got["reason"])
                )
    if missing:
        problems.insert(
            0,
            "no decision reported for %s: this build of the package lacks those fixes"
            % ", ".join(missing),
        )
    installed = status.get("versions", {})
    if not same_release(installed.get("uvicorn"), release):
        problems.append("status reports uvicorn %s, not %s" % (installed.get("uvicorn"), release))
    return decisions, problems


#: (first release, first release after, fix, implementation): the package fixes
#: the bug there, but verify cannot reproduce it in any environment built here.
UNVERIFIABLE = (
    (
        "0.2.21",
        "0.3.0",
        "E2",
        "h11",
        "no WebSocket library installable here works with 0.2.21-0.2.22's upgrade code",
    ),
)


def unverifiable(release: str, fix: str, impl: str) -> str:
    """Why verify cannot reproduce ``fix`` on ``impl`` of ``release`` here, or ''."""
    for first, after, bug, implementation, why in UNVERIFIABLE:
        if (bug, implementation) == (fix, impl):
            if Version(first) <= Version(release) < Version(after):
                return why
    return ""


def judge_verify(result: dict, release: str) -> dict:
    """Condense one verify run: rows, totals, and its problems (fail) and flags."""
    fails, flags, rows = [], [], []
    timing = False  # a problem in a scenario's outcome (worth a retry), not in the plan
    expected = {
        (fix, impl)
        for impl in IMPLS
        for fix in FIXES
        if expected_state(fix, impl, release) == APPLIED
    }
    seen = set()
    total = {"runs": 0, "reproduced": 0, "fixed": 0, "scenarios": 0}
    for row in result.get("rows", []):
        pair = (row["bug"], row["implementation"])
        if unverifiable(release, *pair):
            seen.add(pair)  # decided and applied (checked by status), not reproducible here
            continue
        if not row.get("applies"):
            continue
        seen.add(pair)
        without, with_ = row.get("without"), row.get("with")
        runs = row.get("runs", 0)
        label = "%s/%s %s" % (row["bug"], row["implementation"], row["scenario"])
        condensed = {
            "bug": row["bug"],
            "implementation": row["implementation"],
            "scenario": row["scenario"],
            "runs": runs,
            "without": without,
            "with": with_,
            "reproduced": without if isinstance(without, int) else None,
            "fixed": runs - with_ if isinstance(with_, int) else None,
        }
        rows.append(condensed)
        total["scenarios"] += 1
        total["runs"] += runs
        if isinstance(without, int):
            total["reproduced"] += without
            if without == 0:
                timing = True
                flags.append("%s: did not reproduce without the guard (0/%d)" % (label, runs))
        else:
            timing = True
            fails.append("%s: without the guard: %s" % (label, without))
        if isinstance(with_, int):
            total["fixed"] += runs - with_
            if with_ != 0:
                timing = True
                fails.append(
                    "%s: NOT FIXED with the guard (%d/%d connections still broken)"
                    % (label, with_, runs)
                )
        else:
            timing = True
            fails.append("%s: with the guard: %s" % (label, with_))
    missing = {}  # why -> pairs BUGS.md says are broken that verify did not run
    unobservable = {  # the bug is there, but this loop hides it (the runner says why)
        (row["bug"], row["implementation"])
        for row in result.get("rows", [])
        if row.get("unobservable")
    }
    for pair in sorted(expected - seen - unobservable):
        whys = {
            row.get("why") or "no such row"
            for row in result.get("rows", [])
            if (row["bug"], row["implementation"]) == pair
        } or {"no scenario for it"}
        missing.setdefault("; ".join(sorted(whys)), []).append("%s/%s" % pair)
    for why, pairs in sorted(missing.items()):
        fails.append("verify did not run %s (BUGS.md: broken here): %s" % (", ".join(pairs), why))
    if seen - expected:
        fails.append(
            "verify ran %s, which BUGS.md says are not broken here"
            % ", ".join("%s/%s" % p for p in sorted(seen - expected))
        )
    if not same_release(result.get("uvicorn"), release):
        fails.append("verify reports uvicorn %s, not %s" % (result.get("uvicorn"), release))
    return {"rows": rows, "totals": total, "fails": fails, "flags": flags, "timing": timing}


def run_verify(py: Path, cwd: Path, release: str, loop: str, pythonpath=None) -> dict:
    cmd = [py, "-m", "keepalive_guard", "verify", "--json", "--fixes", SELECTION]
    if loop != "asyncio":
        cmd += ["--loop", loop]
    res = run(cmd, timeout=T_VERIFY, env=clean_env(pythonpath), cwd=cwd)
    attempt = {"rc": res["rc"], "seconds": res["seconds"]}
    data = parse_json(res["stdout"]) if res["stdout"].strip() else None
    if data is None:
        attempt.update(
            rows=[],
            totals={},
            timing=True,
            fails=[
                "verify --loop %s produced no JSON (rc=%s): %s"
                % (loop, res["rc"], tail(res["stderr"] or res["stdout"], 4))
            ],
            flags=[],
        )
        return attempt
    attempt.update(judge_verify(data, release))
    attempt["ok"] = data.get("ok")
    broken = [  # rows that made verify exit 1, but for the ones known unverifiable here
        row
        for row in data.get("rows", [])
        if row.get("applies")
        and row.get("with") != 0
        and not unverifiable(release, row["bug"], row["implementation"])
    ]
    if res["rc"] != 0 and not attempt["fails"] and broken:
        attempt["fails"].append("verify exited %s: %s" % (res["rc"], tail(res["stderr"], 3)))
        attempt["timing"] = True
    if res["stderr"].strip() and (attempt["fails"] or attempt["flags"]):
        attempt["stderr_tail"] = tail(res["stderr"], 10)
    return attempt


def verify_with_retries(py, cwd, release, loop, retries, pythonpath=None) -> dict:
    """Run verify; repeat while a scenario's outcome shows a problem, up to *retries* times.

    Problems of the plan (verify runs other bugs than BUGS.md says, reports
    another release) are deterministic: not retried."""
    attempts = [run_verify(py, cwd, release, loop, pythonpath)]
    while attempts[-1]["timing"] and len(attempts) <= retries:
        attempts.append(run_verify(py, cwd, release, loop, pythonpath))
    final = attempts[-1]
    return {
        "loop": loop,
        "attempts": attempts,
        "final": {k: final[k] for k in ("totals", "fails", "flags")},  # rows: in attempts
        "flaky": len(attempts) > 1 and not final["fails"] and not final["flags"],
    }


# -- uvloop ------------------------------------------------------------------

_UVLOOP_VERSION = (
    "import uvloop, json\n"
    "try:\n"
    "    from importlib import metadata as md; v = md.version('uvloop')\n"
    "except Exception:\n"
    "    v = getattr(uvloop, '__version__', '?')\n"
    "print(json.dumps({'version': v, 'file': uvloop.__file__}))\n"
)

# Starts a real server of the installed release with --loop uvloop on each
# implementation and does one GET: "uvloop starts" means exactly this.
_UVLOOP_PROBE = r"""
import json
from keepalive_guard.verify.server import Server
from keepalive_guard.verify.client import get
out = {}
for http in ("h11", "httptools"):
    try:
        with Server(http=http, loop="uvloop") as server:
            with server.client() as client:
                client.send(get("/"))
                response = client.read_response(timeout=10)
            log = server.log()
        if response is None or response.status != 200:
            errors = [x.strip() for x in log.splitlines() if "Error" in x or "Exception" in x]
            out[http] = (
                "connection closed without a response" if client.closed else "no response in 10 s"
            ) + ("; log: " + errors[-1][:200] if errors else " (nothing logged)")
        else:
            out[http] = "ok"
    except Exception as exc:
        out[http] = ("%s: %s" % (type(exc).__name__, exc)).strip().splitlines()[-1][:300]
print(json.dumps(out))
"""


def uvicorn_uvloop_spec(env_dir: Path, release: str) -> str:
    """uvloop as uvicorn[standard] asks for it (its METADATA), capped for <= 0.13.4."""
    specs = []
    for meta in env_dir.glob("lib/python*/site-packages/uvicorn-*.dist-info/METADATA"):
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Requires-Dist:"):
                req = line.split(":", 1)[1].split(";", 1)[0].strip()
                if envs._req_name(req) == "uvloop":
                    spec = envs._normalize_spec(req)[len("uvloop") :].strip()
                    if spec and spec not in specs:
                        specs.append(spec)
    if interpreters.parse_release(release) <= UVLOOP_CAP_UPTO:
        specs.append(UVLOOP_CAP)
    return "uvloop" + ",".join(specs)


def uvloop_overlay(py: Path, pyversion: str, spec: str) -> tuple:
    """(directory, error): uvloop *spec* installed with ``uv pip install --target`` for *py*.

    Shared by every cell with the same interpreter version and spec; never
    touches the cell's environment."""
    name = "py%s-%s" % (pyversion, hashlib.sha256(spec.encode()).hexdigest()[:10])
    target = WORK / "uvloop" / name
    done = target / ".matrix-done"
    with envs._FileLock(WORK / "uvloop" / ".locks" / (name + ".lock"), timeout=T_UVLOOP_INSTALL):
        if done.is_file():
            return target, None
        failed = target.with_name(name + ".failed")
        if failed.is_file():
            return None, failed.read_text()
        tmp = target.with_name(name + ".tmp")
        if tmp.exists():
            subprocess.run(["rm", "-rf", str(tmp)], timeout=120)
        res = run(
            envs.ensure_uv()
            + ["pip", "install", "--quiet", "--target", str(tmp), "--python", str(py), spec],
            timeout=T_UVLOOP_INSTALL,
            env=envs._uv_env(),
        )
        if res["rc"] != 0:
            why = "`uv pip install %s` failed: %s" % (
                spec,
                tail(res["stderr"] + res["stdout"], 3).replace("\n", " "),
            )
            if not res["timed_out"]:
                failed.write_text(why)  # remembered: same interpreter, same spec, same answer
            return None, why
        (tmp / ".matrix-done").write_text(spec + "\n")
        if target.exists():
            subprocess.run(["rm", "-rf", str(target)], timeout=120)
        os.replace(tmp, target)
        return target, None


def _probe_uvloop(py: Path, env_dir: Path, pythonpath) -> tuple:
    """(version, problem): uvloop's version and why a server does not serve with it ('' = ok)."""
    own = run([py, "-c", _UVLOOP_VERSION], timeout=T_PROBE, env=clean_env(pythonpath), cwd=env_dir)
    if own["rc"] != 0:
        return None, "uvloop does not import: " + tail(own["stderr"], 1)
    version = parse_json(own["stdout"])["version"]
    probe = run([py, "-c", _UVLOOP_PROBE], timeout=T_PROBE, env=clean_env(pythonpath), cwd=env_dir)
    started = parse_json(probe["stdout"]) if probe["rc"] == 0 and probe["stdout"].strip() else None
    if not started:
        return version, "start-up probe failed: " + tail(probe["stderr"], 2).replace("\n", " ")
    bad = sorted((http, why) for http, why in started.items() if why != "ok")
    if bad:
        if len(bad) == 2 and bad[0][1] == bad[1][1]:
            return version, "uvloop %s: h11 and httptools: %s" % (version, bad[0][1])
        return version, "uvloop %s: %s" % (version, "; ".join("%s: %s" % kv for kv in bad))
    return version, ""


def uvloop_for(info: dict, release: str) -> dict:
    """Where uvloop comes from for this cell, and whether a server serves with it.

    The environment's own uvloop if it has one (uvicorn <= 0.11.x requires it);
    else what uvicorn[standard] asks for, in an overlay directory; if that one
    does not serve and is not capped, the same capped to uvloop<0.22 (uvloop
    0.22 broke the start-up of some old releases beyond the documented <= 0.13.4)."""
    py, env_dir = Path(info["python"]), Path(info["env_dir"])
    state = {"available": False, "source": None, "spec": None, "version": None, "path": None}
    tried = []
    version, problem = _probe_uvloop(py, env_dir, None)
    if version is not None:
        state.update(source="environment (installed with uvicorn)", version=version)
        tried.append(problem)
    else:
        spec = uvicorn_uvloop_spec(env_dir, release)
        specs = [spec] if UVLOOP_CAP in spec else [spec, spec + "," + UVLOOP_CAP]
        for spec in specs:
            target, error = uvloop_overlay(py, info["python_version"], spec)
            if target is None:
                tried.append(error)
                continue
            version, problem = _probe_uvloop(py, env_dir, target)
            tried.append(problem)
            state.update(
                spec=spec,
                version=version,
                path=str(target),
                source="overlay %s (uv pip install --target)" % target.relative_to(HERE),
            )
            if not problem:
                break
    if tried[-1]:
        state["reason"] = "; ".join(tried)
        return state
    if len(tried) > 1:
        state["fallback"] = "%s; so uvloop%s" % (tried[0], UVLOOP_CAP)
    state["available"] = True
    return state


def run_cell(release, minor, roles, wheel, wheel_sha, found, retries) -> dict:
    name = "%s@%s" % (release, minor)
    started = time.monotonic()
    cell = {
        "cell": name,
        "release": release,
        "python_minor": minor,
        "roles": roles,
        "state": None,
        "reasons": [],
        "flags": [],
        "flaky": [],
        "retried": [],
        "notes": [],
        "finished": None,
        "matrix_version": MATRIX_VERSION,
    }
    if release in UNINSTALLABLE:
        cell.update(state=SKIPPED, reasons=[UNINSTALLABLE[release]], finished=now())
        return cell
    if minor not in found:
        cell.update(
            state=SKIPPED,
            reasons=["no Python %s interpreter found here (%s)" % (minor, interpreters.ENV_VAR)],
            finished=now(),
        )
        return cell
    pyinfo = interpreters.interpreter_info(found[minor])
    cell["key"], cell["inputs"] = cell_key(release, pyinfo, package_sha256(wheel))
    cell["expected"] = expected_decisions(release)
    try:
        info = envs.build_env(release, found[minor], wheel)
    except Exception as exc:  # noqa: BLE001 - any build failure fails the cell
        cell.update(
            state=FAILED,
            reasons=["environment cannot be built: %s" % tail(str(exc), 8)],
            seconds=round(time.monotonic() - started, 1),
            finished=now(),
        )
        return cell
    cell["env"] = {
        k: info.get(k)
        for k in (
            "python_version",
            "interpreter",
            "recipe",
            "venv_creator",
            "notes",
            "versions",
            "checks",
            "build_seconds",
            "reused",
            "env_dir",
        )
    }
    py, env_dir = Path(info["python"]), Path(info["env_dir"])
    if info.get("wheel_sha256") != wheel_sha:
        cell["reasons"].append("environment has wheel %s" % info.get("wheel_sha256"))
    if not same_release(info.get("versions", {}).get("uvicorn"), release):
        cell["reasons"].append(
            "environment has uvicorn %s, not %s"
            % (info.get("versions", {}).get("uvicorn"), release)
        )

    status = run(
        [py, "-m", "keepalive_guard", "status", "--json", "--fixes", SELECTION],
        T_STATUS,
        clean_env(),
        env_dir,
    )
    data = parse_json(status["stdout"]) if status["rc"] == 0 and status["stdout"].strip() else None
    if data is None:
        cell["reasons"].append(
            "status --json failed (rc=%s): %s" % (status["rc"], tail(status["stderr"], 4))
        )
        cell["decisions"] = {}
    else:
        cell["decisions"], problems = check_decisions(data, release)
        cell["status_versions"] = data.get("versions")
        cell["reasons"].extend(problems)
        for impl in IMPLS:  # an observation, not a verdict: verify's rows decide
            have = info.get("versions", {}).get(impl)
            if have and not (data.get("versions") or {}).get(impl):
                cell["notes"].append(
                    "status reports no %s version although %s %s is installed and imports"
                    % (impl, impl, have)
                )

    cell["verify"] = {}
    for loop in ("asyncio", "uvloop"):
        pythonpath = None
        if loop == "uvloop":
            cell["uvloop"] = uv = uvloop_for(info, release)
            if not uv["available"]:
                continue
            pythonpath = uv["path"]
        outcome = verify_with_retries(py, env_dir, release, loop, retries, pythonpath)
        cell["verify"][loop] = outcome
        for key, items in (("reasons", "fails"), ("flags", "flags")):
            for item in outcome["final"][items]:
                for k, text in enumerate(cell[key]):  # same problem on both loops: one line
                    if text == "asyncio: " + item:
                        cell[key][k] = "asyncio+uvloop: " + item
                        break
                else:
                    cell[key].append("%s: %s" % (loop, item))
        if len(outcome["attempts"]) > 1:
            first = outcome["attempts"][0]
            history = "%s: attempt 1: %s; %s" % (
                loop,
                "; ".join(first["fails"] + first["flags"]),
                "; ".join(
                    "attempt %d: %s" % (n + 2, "; ".join(a["fails"] + a["flags"]) or "clean")
                    for n, a in enumerate(outcome["attempts"][1:])
                ),
            )
            cell["flaky" if outcome["flaky"] else "retried"].append(history)
    cell["state"] = FAILED if cell["reasons"] else FLAGGED if cell["flags"] else GREEN
    cell["seconds"] = round(time.monotonic() - started, 1)
    cell["finished"] = now()
    return cell


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------
# results: json and markdown


def load_results() -> dict:
    """results.json without the cells and runs of an older MATRIX_VERSION.

    Those judged by another procedure (other fixes, other expectations) are
    never reused and would misreport the current one."""
    if RESULTS_JSON.is_file():
        try:
            data = json.loads(RESULTS_JSON.read_text())
            if isinstance(data, dict) and isinstance(data.get("cells"), dict):
                data["cells"] = {
                    name: cell
                    for name, cell in data["cells"].items()
                    if cell.get("matrix_version") == MATRIX_VERSION
                }
                data["runs"] = [
                    r for r in data.get("runs", []) if r.get("matrix_version") == MATRIX_VERSION
                ]
                return data
        except ValueError:
            pass
    return {"cells": {}, "runs": []}


def save_json(data: dict) -> None:
    with _save_lock:
        tmp = RESULTS_JSON.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, RESULTS_JSON)


def decisions_text(decisions: dict) -> str:
    """'h11: C D E E2 applied · httptools: C D E applied' (the rest fixed upstream / n/a)."""
    parts = []
    for impl in IMPLS:
        by_state = {}
        for fix in FIXES:
            state = decisions.get(impl, {}).get(fix, {}).get("state", "missing")
            by_state.setdefault(state, []).append(fix)
        applied = by_state.pop(APPLIED, [])
        text = "%s applied" % " ".join(applied) if applied else "nothing to fix"
        odd = {s: f for s, f in by_state.items() if s not in (FIXED_UPSTREAM, NOT_APPLICABLE)}
        for state, fixes in sorted(odd.items()):
            text += "; %s %s" % (" ".join(fixes), state.upper())
        parts.append("%s: %s" % (impl, text))
    return " · ".join(parts)


def counts_text(outcome: dict) -> str:
    t = outcome["final"]["totals"]
    if not t or not t.get("scenarios"):
        return "nothing to reproduce"
    return "%d/%d → %d/%d" % (t["reproduced"], t["runs"], t["fixed"], t["runs"])


STATE_MARK = {GREEN: "✅", FLAGGED: "⚠️", FAILED: "❌", SKIPPED: "⏭️"}


def cell_text(cell: dict) -> str:
    if cell is None:
        return "not run"
    py = cell.get("env", {}).get("python_version") or cell["python_minor"]
    text = "%s %s %s" % (STATE_MARK.get(cell["state"], "?"), py, cell["state"])
    if cell.get("flaky"):
        text += " (flaky)"
    if cell["state"] == SKIPPED:
        return text
    bits = []
    for loop in ("asyncio", "uvloop"):
        if loop in cell.get("verify", {}):
            bits.append("%s %s" % (loop, counts_text(cell["verify"][loop])))
    if bits:
        text += "<br>" + "<br>".join(bits)
    return text


def versions_text(cells: list) -> str:
    seen = []
    for cell in cells:
        v = (cell or {}).get("env", {}).get("versions", {})
        if not v:
            continue
        item = "h11 %s / httptools %s" % (v.get("h11", "—"), v.get("httptools", "—"))
        recipe = cell["env"].get("recipe")
        item += " (%s, %s)" % (cell["python_minor"], recipe)
        seen.append(item)
    return "<br>".join(seen) or "—"


def uvloop_text(cell: dict) -> str:
    if cell is None or cell["state"] == SKIPPED or "uvloop" not in cell:
        return "—"
    uv = cell["uvloop"]
    if uv.get("available"):
        text = "%s: uvloop %s" % (cell["python_minor"], uv["version"])
        if uv.get("fallback"):
            text += " (%s)" % md_escape(uv["fallback"])
        return text
    return "%s: not available (%s); asyncio loop used" % (
        cell["python_minor"],
        md_escape(uv.get("reason", "?")),
    )


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def notes_text(cell: dict) -> list:
    if cell is None:
        return []
    name = cell["python_minor"]
    notes = []
    selection = cell.get("inputs", {}).get("selection", DEFAULT_SELECTION)
    if selection != DEFAULT_SELECTION:
        notes.append("%s run with --fixes %s" % (name, selection))
    if cell["state"] in (FAILED, SKIPPED):
        notes += ["%s %s: %s" % (name, cell["state"].upper(), r) for r in cell["reasons"]]
    if cell["state"] == FLAGGED:
        notes += ["%s FLAGGED: %s" % (name, f) for f in cell["flags"]]
    notes += ["%s flaky (passed on retry): %s" % (name, f) for f in cell.get("flaky", [])]
    notes += ["%s same on retry: %s" % (name, f) for f in cell.get("retried", [])]
    if cell["state"] != GREEN:
        notes += ["%s note: %s" % (name, n) for n in cell.get("notes", [])]
    return [md_escape(n) for n in notes]


def write_markdown(data: dict, release_list: list) -> None:
    cells = data["cells"]
    wanted = matrix_cells(release_list)
    totals = {GREEN: 0, FLAGGED: 0, FAILED: 0, SKIPPED: 0, "not run": 0}
    flaky = 0
    for release, minor, _ in wanted:
        cell = cells.get("%s@%s" % (release, minor))
        totals[cell["state"] if cell else "not run"] += 1
        flaky += bool(cell and cell.get("flaky"))
    full = next((r for r in reversed(data.get("runs", [])) if r.get("full")), None)
    last = data["runs"][-1] if data.get("runs") else {}
    lines = [
        "# keepalive-guard on every uvicorn release (%s to %s)"
        % (release_list[0], release_list[-1]),
        "",
        "Generated by `compat/matrix.py`; do not edit by hand.",
        "",
    ]
    for label, r in (("Full run", full), ("Last update", last)):
        if r and not (label == "Last update" and r is full):
            lines.append(
                "- %s: `%s`, %s, %s cells run (%s reused), %s min wall, on %s%s"
                % (
                    label,
                    r["command"],
                    r["started"],
                    r["ran"],
                    r["reused"],
                    r["wall_minutes"],
                    r["machine"],
                    "; load average at the end %s (other test suites ran alongside)"
                    % r["loadavg_end"]
                    if r.get("loadavg_end")
                    else "",
                )
            )
    lines += [
        "- keepalive-guard package files sha256 `%s` (wheel `%s`, tree: %s)"
        % (
            last.get("package_sha256", "?")[:16],
            last.get("wheel_sha256", "?")[:16],
            last.get("tree", "?"),
        ),
        "- %d cells (%d releases × the oldest and the newest CPython each supports): "
        "**%d green, %d flagged, %d failed, %d skipped**%s%s"
        % (
            len(wanted),
            len(release_list),
            totals[GREEN],
            totals[FLAGGED],
            totals[FAILED],
            totals[SKIPPED],
            ", %d not run" % totals["not run"] if totals["not run"] else "",
            "; %d flaky (a problem on the first attempt, clean on the retry)" % flaky
            if flaky
            else "",
        ),
        "- Rerun one release: `python3 compat/matrix.py --release 0.13.4` "
        "(or `--cells 0.13.4@3.6`, `--python 3.6`; `--force` ignores reusable results).",
        "",
        "Each cell builds the release's environment (`compat/envs.py`), runs "
        "`python -m keepalive_guard status --json --fixes %s` and `verify --json --fixes %s` "
        "(`all,R4` is every fix, the opt-in R4 too; each applicable bug "
        "on 127.0.0.1, 5 concurrent connections per scenario, without then with the guard), "
        "and `verify --json --loop uvloop` where uvloop installs and starts. "
        "**Decisions** are the guard's per implementation, checked against BUGS.md's "
        "ranges (anything not listed is fixed upstream or not applicable). "
        "**Counts** are `broken without the guard / connections → fixed with the guard / "
        "connections`, summed over the cell's applicable scenarios."
        % (DEFAULT_SELECTION, DEFAULT_SELECTION),
        "",
        "✅ green: decisions as BUGS.md says, every applicable bug reproduced and fixed. "
        "⚠️ flagged: an applicable bug did not reproduce without the guard (the check lost "
        "its teeth). ❌ failed: environment not built, decision unrecognised or unexpected, "
        "or the guard did not fix a bug. ⏭️ skipped: no interpreter here.",
        "",
        "| uvicorn | oldest Python | newest Python | installed h11 / httptools | "
        "decisions (applied fixes) | uvloop | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    by_release = {}
    for release, minor, _ in wanted:
        by_release.setdefault(release, []).append(cells.get("%s@%s" % (release, minor)))
    for release in release_list:
        pair = by_release[release]
        oldest, newest = pair[0], pair[-1]
        decision_texts = []
        for cell in pair:
            if cell and cell.get("decisions"):
                text = decisions_text(cell["decisions"])
                if text not in decision_texts:
                    decision_texts.append(text)
        if not decision_texts:
            decisions = "—"
        elif len(decision_texts) == 1:
            decisions = decision_texts[0]
        else:
            decisions = "<br>".join(
                "%s: %s" % (c["python_minor"], decisions_text(c["decisions"]))
                for c in pair
                if c and c.get("decisions")
            )
        notes = []
        for cell in pair:
            notes += notes_text(cell)
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s |"
            % (
                release,
                cell_text(oldest),
                cell_text(newest) if len(pair) > 1 else "(same)",
                versions_text(pair),
                decisions,
                "<br>".join(uvloop_text(c) for c in pair if c) or "—",
                "<br>".join(notes) or "",
            )
        )
    lines.append("")
    RESULTS_MD.write_text("\n".join(lines))


# --------------------------------------------------------------------------
# main


def git_tree() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=T_GIT,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "keepalive_guard", "pyproject.toml", "setup.py"],
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=T_GIT,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return "%s%s" % (head or "?", " + uncommitted package changes" if dirty else "")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", action="append", default=[], help="release(s), repeatable")
    parser.add_argument("--python", action="append", default=[], help="3.X, repeatable")
    parser.add_argument("--cells", default=None, help="RELEASE@PYTHON,... (matrix cells)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel cells")
    parser.add_argument("--retries", type=int, default=1, help="repeats of a verify with problems")
    parser.add_argument("--force", action="store_true", help="rerun cells even if unchanged")
    parser.add_argument(
        "--fixes",
        default=DEFAULT_SELECTION,
        help="fix selection for status and verify (default %(default)s)",
    )
    parser.add_argument(
        "--report", action="store_true", help="only rewrite RESULTS.md from results.json"
    )
    return parser.parse_args(argv)


def select(args, release_list) -> list:
    all_cells = matrix_cells(release_list)
    chosen = all_cells
    split = lambda values: [v for item in values for v in item.replace(",", " ").split()]  # noqa: E731
    if args.release:
        wanted = split(args.release)
        unknown = [r for r in wanted if r not in release_list]
        if unknown:
            raise SystemExit("unknown release(s) %s; known: %s ..." % (unknown, release_list[:3]))
        chosen = [c for c in chosen if c[0] in wanted]
    if args.python:
        wanted = split(args.python)
        chosen = [c for c in chosen if c[1] in wanted]
    if args.cells:
        index = {"%s@%s" % (r, m): (r, m, roles) for r, m, roles in all_cells}
        picked = []
        for name in split([args.cells]):
            if name not in index:
                raise SystemExit(
                    "%s is not a matrix cell (RELEASE@PYTHON, PYTHON the oldest or newest the "
                    "release supports: %s)"
                    % (
                        name,
                        ", ".join(
                            "%s@%s" % (r, m) for r, m, _ in all_cells if name.startswith(r + "@")
                        )
                        or "?",
                    )
                )
            picked.append(index[name])
        chosen = [c for c in chosen if c in picked]
    if not chosen:
        raise SystemExit("no cells selected")
    return chosen


def main(argv=None) -> int:
    global SELECTION
    args = parse_args(argv)
    SELECTION = args.fixes
    release_list = releases()
    if args.report:
        write_markdown(load_results(), release_list)
        print("wrote %s" % RESULTS_MD.relative_to(ROOT))
        return 0
    chosen = select(args, release_list)
    full = not (args.release or args.python or args.cells)
    started_wall = time.monotonic()
    started = now()
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python3", "compat/matrix.py"] + [shlex.quote(a) for a in given])

    tree = git_tree()
    built = envs.build_wheel(ROOT, WORK / "dist")
    wheel_sha = envs.sha256_file(built)
    package_sha = package_sha256(built)
    # A private copy: compat/run.py and demo.py rebuild compat/.work/dist/ under the
    # same file name, and every cell of this run must get this very wheel.
    wheel = WORK / "matrix-wheels" / wheel_sha[:16] / built.name
    if not wheel.is_file() or envs.sha256_file(wheel) != wheel_sha:
        wheel.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, wheel)
    found = interpreters.find_interpreters()
    data = load_results()
    data.pop("note", None)
    cells = {"%s@%s" % (r, m) for r, m, _ in matrix_cells(release_list)}
    data["cells"] = {n: c for n, c in data["cells"].items() if n in cells}  # no longer cells

    todo, reused = [], []
    for release, minor, roles in chosen:
        name = "%s@%s" % (release, minor)
        old = data["cells"].get(name)
        if minor in found and old and not args.force and old["state"] in (GREEN, FLAGGED):
            key, _ = cell_key(release, interpreters.interpreter_info(found[minor]), package_sha)
            if old.get("key") == key:
                old["roles"] = roles
                reused.append(name)
                continue
        todo.append((release, minor, roles))
    print(
        "matrix: %d cells selected, %d reused from %s, %d to run with %d jobs; wheel %s"
        % (len(chosen), len(reused), RESULTS_JSON.name, len(todo), args.jobs, wheel_sha[:12]),
        flush=True,
    )

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            pool.submit(run_cell, r, m, roles, wheel, wheel_sha, found, args.retries): (r, m)
            for r, m, roles in todo
        }
        for future in as_completed(futures):
            release, minor = futures[future]
            try:
                cell = future.result()
            except Exception as exc:  # noqa: BLE001 - a runner bug fails the cell, visibly
                cell = {
                    "cell": "%s@%s" % (release, minor),
                    "release": release,
                    "python_minor": minor,
                    "roles": [],
                    "matrix_version": MATRIX_VERSION,
                    "state": FAILED,
                    "reasons": ["matrix.py error: %s: %s" % (type(exc).__name__, exc)],
                    "flags": [],
                    "flaky": [],
                    "finished": now(),
                }
            done += 1
            with _save_lock:
                data["cells"][cell["cell"]] = cell
            save_json(data)
            with _print_lock:
                print(
                    "[%3d/%d %5.0fs] %-20s %-8s %s%s"
                    % (
                        done,
                        len(todo),
                        time.monotonic() - started_wall,
                        cell["cell"],
                        cell["state"],
                        "%ss" % cell.get("seconds", "-"),
                        ("  " + " | ".join(cell["reasons"] + cell["flags"] + cell["flaky"]))[:400]
                        if cell["reasons"] or cell["flags"] or cell["flaky"]
                        else "",
                    ),
                    flush=True,
                )

    wall = time.monotonic() - started_wall
    data.setdefault("runs", []).append(
        {
            "command": command,
            "started": started,
            "wall_minutes": round(wall / 60, 1),
            "machine": "%s, %d cores (%s), jobs %d"
            % (platform.node() or "?", os.cpu_count() or 0, platform.machine(), args.jobs),
            "ran": len(todo),
            "reused": len(reused),
            "full": full,
            "wheel_sha256": wheel_sha,
            "package_sha256": package_sha,
            "tree": tree,
            "interpreters": found,
            "matrix_version": MATRIX_VERSION,
            "loadavg_end": "%.1f / %.1f / %.1f (1/5/15 min)" % os.getloadavg(),
        }
    )
    data["runs"] = data["runs"][-20:]
    data["matrix_version"] = MATRIX_VERSION
    data.pop("first_fixed", None)
    data["broken"] = BROKEN
    save_json(data)
    write_markdown(data, release_list)

    selected = {"%s@%s" % (r, m) for r, m, _ in chosen}
    states = {}
    for name in selected:
        states.setdefault(data["cells"][name]["state"], []).append(name)
    flaky = sorted(n for n in selected if data["cells"][n].get("flaky"))
    order = lambda names: sorted(names, key=lambda n: (Version(n.split("@")[0]), n))  # noqa: E731
    print(
        "\nmatrix: %d cells in %.1f min: %d green, %d flagged, %d failed, %d skipped; %d flaky"
        % (
            len(selected),
            wall / 60,
            len(states.get(GREEN, [])),
            len(states.get(FLAGGED, [])),
            len(states.get(FAILED, [])),
            len(states.get(SKIPPED, [])),
            len(flaky),
        )
    )
    for label, names in (
        ("FAILED", states.get(FAILED, [])),
        ("flagged", states.get(FLAGGED, [])),
        ("skipped", states.get(SKIPPED, [])),
        ("flaky", flaky),
    ):
        for name in order(names):
            cell = data["cells"][name]
            detail = cell["reasons"] or cell["flags"] or cell.get("flaky") or []
            print("  %-8s %-20s %s" % (label, name, " | ".join(detail)[:600]))
    print("results: %s, %s" % (RESULTS_JSON.relative_to(ROOT), RESULTS_MD.relative_to(ROOT)))
    return 1 if states.get(FAILED) else 0


if __name__ == "__main__":
    sys.exit(main())
