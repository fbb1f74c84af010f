"""Build cached virtual environments with one uvicorn release and keepalive-guard.

Tooling (Python 3.9+), not runtime code.  See UVICORN-HISTORY.md, "Python and
dependency pins" and "Installing old releases".

Each environment holds ``uvicorn==X``, h11, httptools, wsproto (for ``--ws
wsproto``), pytest and a keepalive-guard wheel.  uvloop is never asked for
(tests use ``--loop asyncio``); releases up to 0.11.x hard-require it on
CPython/Linux, so a plain install brings it in, constrained to ``uvloop<0.22``.

Install recipes, tried in order; the one that worked is recorded:

``plain``
    ``uv pip install uvicorn==X h11 httptools wsproto pytest <wheel>``; the
    resolver honours uvicorn's own pins.
``no-deps``
    ``uv pip install --no-deps uvicorn==X``, then uvicorn's unconditional
    ``Requires-Dist`` (read from the installed METADATA; h11 in range,
    ``click==7.*`` up to 0.13.4, typing-extensions where marked, ...) minus
    httptools/uvloop/websockets, then the first httptools that installs from a
    short list (uvicorn's declared pin first, then newer series), then
    wsproto, pytest and the wheel.  Needed where a pinned ``httptools==0.0.13``
    / ``==0.1.*`` does not build (Python 3.11+).
``pip`` / ``pip-no-deps``
    The same two with ``pip<24.1`` (``pip<22`` on 3.6) inside the venv, for
    the case where uv refuses a release's metadata.  (uv 0.13 accepts the
    ``>=7.*`` metadata of 0.12.0-0.13.2 and 0.14.0 that pip >= 24.1 rejects,
    so these are normally never reached.)

The venv is made with ``uv venv --python <interpreter>``; if uv cannot make
one, with ``<interpreter> -m venv`` plus a pip upgrade (``pip<22`` on 3.6,
whose bundled pip 18 ignores Requires-Python).  Packages still go in with uv
when it can.

Environments live in ``$KEEPALIVE_GUARD_CACHE`` (the directory holding the
environments), else ``$XDG_CACHE_HOME/keepalive-guard/envs``, else
``~/.cache/keepalive-guard/envs``; one directory per (uvicorn, interpreter,
wheel sha256, recipe version) hash, with an ``env-info.json`` written last
(its presence marks a finished environment); fcntl lock files live in
``<cache>/.locks/``.
uv's own cache is shared and reused.

CLI::

    python compat/envs.py build --uvicorn 0.12.2 --python 3.6 --wheel path.whl
    python compat/envs.py wheel --project . --out dist/
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

try:  # imported as part of a package (compat.envs)
    from . import interpreters
except ImportError:  # run as a script, or compat/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import interpreters  # noqa: E402

# Bump when the install recipes change: it is part of every environment key.
RECIPE_VERSION = "5"

RECIPES = ("plain", "no-deps", "pip", "pip-no-deps")

# Extra packages every environment gets (besides uvicorn and the wheel).
EXTRA_PACKAGES = ("h11", "httptools", "wsproto", "pytest", "gunicorn")

# uvicorn.workers is deprecated from 0.30.0 in favour of the uvicorn-worker
# package: environments of those releases get it, so the gunicorn tests run
# against both bases across the matrix.
UVICORN_WORKER_FROM = (0, 30, 0)

# Never installed by the no-deps recipe even when uvicorn requires them ...
SKIP_IN_NO_DEPS = {"httptools", "uvloop", "websockets"}

# ... except websockets before 0.3.0, whose protocol modules import it at the
# top (0.2.x has no wsproto_impl): without it neither implementation imports.
WEBSOCKETS_REQUIRED_BEFORE = (0, 3, 0)

# httptools series tried after uvicorn's own pin in the no-deps recipe, oldest
# first: the first one that installs (a wheel or a successful build) wins.
HTTPTOOLS_FALLBACKS = (
    "httptools>=0.1,<0.2",
    "httptools>=0.2,<0.3",
    "httptools>=0.5,<0.6",  # first with 3.11 wheels
    "httptools>=0.6,<0.7",  # 3.12 / 3.13 wheels
    "httptools",
)

# Older wsproto series tried when the resolved one does not import.  wsproto
# 1.2.x declares h11>=0.9 but imports h11._headers.Headers, which h11 < 0.10
# (pinned by uvicorn <= 0.11.x) lacks; 1.0.0 works with h11 0.9.
WSPROTO_FALLBACKS = ("wsproto<1.2", "wsproto<1.1")

# uvicorn has wsproto_impl from 0.3.0; before, only the websockets library.
# uvicorn 0.3.0-0.4.4 drive wsproto's first API (``WSConnection(conn_type=...)``,
# gone in wsproto 0.13): they get wsproto 0.12, which pins h11 0.8, as users
# had then.  The import check below cannot see this: the call fails at the
# first WebSocket upgrade.
OLD_WSPROTO_API = ((0, 3, 0), (0, 4, 5))
OLD_WSPROTO = ("wsproto<0.13", "h11<0.9")

_WSPROTO_CHECK = (
    "import importlib.util, wsproto\n"
    "if importlib.util.find_spec('uvicorn.protocols.websockets.wsproto_impl'):\n"
    "    from uvicorn.protocols.websockets import wsproto_impl\n"
)

# Timeouts (seconds).
T_VENV = 180
T_INSTALL = 900  # may build httptools from source
T_SMALL = 300
T_VERIFY = 120
T_LOCK = 3600
T_UV_BOOTSTRAP = 600
T_BUILD_WHEEL = 600

VERIFY_SCRIPT = r"""
import json, sys
import importlib
import uvicorn, h11, httptools, wsproto, keepalive_guard
# h11.py / httptools.py before 0.2.17, h11_impl.py / httptools_impl.py since
for impl in ("h11", "httptools"):
    try:
        importlib.import_module("uvicorn.protocols.http.%s_impl" % impl)
    except ImportError:
        importlib.import_module("uvicorn.protocols.http." + impl)
try:
    from importlib import metadata as md
except ImportError:
    try:
        import importlib_metadata as md
    except ImportError:
        md = None
def dist_version(name):
    if md is not None:
        try:
            return md.version(name)
        except Exception:
            return None
    try:
        import pkg_resources
        return pkg_resources.get_distribution(name).version
    except Exception:
        return None
versions = {"uvicorn": uvicorn.__version__,
            "python": "%d.%d.%d" % sys.version_info[:3]}
for name in ("h11", "httptools", "wsproto", "pytest", "click", "keepalive-guard", "gunicorn",
             "uvicorn-worker",
             "typing-extensions", "uvloop", "websockets"):
    v = dist_version(name)
    if v is not None:
        versions[name] = v
checks = {}
try:
    import importlib.util
    if importlib.util.find_spec("uvicorn.protocols.websockets.wsproto_impl") is None:
        checks["wsproto_impl"] = "absent"  # before 0.3.0: websockets only
    else:
        from uvicorn.protocols.websockets import wsproto_impl
        checks["wsproto_impl"] = "ok"
except Exception as exc:
    checks["wsproto_impl"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps({"versions": versions, "checks": checks,
                  "executable": sys.executable}))
"""


class EnvBuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# subprocess helpers


def run(cmd: Sequence, timeout: float, env: Optional[dict] = None, cwd=None) -> dict:
    """Run *cmd* in its own process group, killing the whole group on timeout.

    Returns {"rc", "timed_out", "stdout", "stderr", "seconds"} (rc -9 on a
    timeout).  The compat tools all run their subprocesses through this.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    return {
        "rc": -9 if timed_out else proc.returncode,
        "timed_out": timed_out,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace")
        + ("\n[timed out after %ss]" % timeout if timed_out else ""),
        "seconds": round(time.monotonic() - started, 1),
    }


def _run(
    cmd: Sequence[str], timeout: float, env: Optional[dict] = None, cwd: Optional[Path] = None
) -> subprocess.CompletedProcess:
    """``run`` with stderr and stdout together (stdout last: callers parse its
    last line), as a CompletedProcess."""
    res = run(cmd, timeout, env=env, cwd=cwd)
    return subprocess.CompletedProcess(cmd, res["rc"], res["stderr"] + res["stdout"])


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _check(result: subprocess.CompletedProcess, what: str) -> str:
    if result.returncode != 0:
        raise EnvBuildError(
            "%s failed (rc=%s):\n%s" % (what, result.returncode, _tail(result.stdout))
        )
    return result.stdout


_uv_cmd: Optional[list] = None


def ensure_uv() -> list:
    """Return the command (as a list) that runs uv, installing uv with pip if missing."""
    global _uv_cmd
    if _uv_cmd is not None:
        return _uv_cmd
    candidates = []
    exe = shutil.which("uv")
    if exe:
        candidates.append([exe])
    candidates.append([sys.executable, "-m", "uv"])
    for cmd in candidates:
        if _run(cmd + ["--version"], timeout=60).returncode == 0:
            _uv_cmd = cmd
            return cmd
    # Not usable: install it for this interpreter.
    for extra in ([], ["--user"]):
        res = _run(
            [sys.executable, "-m", "pip", "install", "--quiet", *extra, "uv"],
            timeout=T_UV_BOOTSTRAP,
        )
        if res.returncode == 0:
            break
    else:
        raise EnvBuildError("could not install uv with pip:\n" + _tail(res.stdout))
    res = _run([sys.executable, "-c", "import uv; print(uv.find_uv_bin())"], timeout=60)
    cmd = (
        [res.stdout.strip().splitlines()[-1]]
        if res.returncode == 0
        else [sys.executable, "-m", "uv"]
    )
    _check(_run(cmd + ["--version"], timeout=60), "uv --version after pip install uv")
    _uv_cmd = cmd
    return cmd


def _uv_env() -> dict:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # only the interpreter we name
    env.setdefault("UV_NO_PROGRESS", "1")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


# --------------------------------------------------------------------------
# locations, keys, locks


def default_cache() -> Path:
    override = os.environ.get("KEEPALIVE_GUARD_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "keepalive-guard" / "envs"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve_python(python: str) -> dict:
    """*python* is "3.X" (looked up with interpreters.find_interpreter) or a path."""
    if re.fullmatch(r"3\.\d+", python):
        path = interpreters.find_interpreter(python)
    else:
        path = python
    info = interpreters.interpreter_info(path)
    if info is None:
        raise EnvBuildError("cannot run interpreter %r" % path)
    if re.fullmatch(r"3\.\d+", python) and info["minor"] != python:
        raise EnvBuildError("interpreter %s is %s, not %s" % (path, info["version"], python))
    return info


def env_key(uvicorn: str, pyinfo: dict, wheel_sha: str, recipes: Sequence[str]) -> str:
    data = {
        "uvicorn": uvicorn,
        "python": pyinfo["version"],
        "implementation": pyinfo["implementation"],
        "interpreter": os.path.realpath(pyinfo["executable"]),
        "wheel_sha256": wheel_sha,
        "recipe_version": RECIPE_VERSION,
        "recipes": list(recipes),
        "extras": list(EXTRA_PACKAGES),
        "machine": platform.machine(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class _FileLock:
    """Exclusive fcntl lock on *path*, waiting at most *timeout* seconds."""

    def __init__(self, path: Path, timeout: float = T_LOCK):
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise EnvBuildError("timed out waiting for lock %s" % self.path) from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# --------------------------------------------------------------------------
# building


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _is_release_le(uvicorn: str, release: tuple) -> bool:
    return interpreters.parse_release(uvicorn) <= release


class _Builder:
    def __init__(self, uvicorn: str, pyinfo: dict, wheel: Path, venv: Path):
        self.uvicorn = uvicorn
        self.pyinfo = pyinfo
        self.wheel = wheel
        self.venv = venv
        self.py = _venv_python(venv)
        self.notes: list = []
        self.creator = None
        self.uv = ensure_uv()
        self.env = _uv_env()

    # -- venv creation -----------------------------------------------------
    def create(self, with_pip: bool) -> None:
        if self.venv.exists():
            shutil.rmtree(self.venv)
        interp = self.pyinfo["executable"]
        cmd = self.uv + ["venv", "--no-project", "--quiet", "--python", interp]
        if with_pip:
            cmd.append("--seed")
        res = _run(cmd + [str(self.venv)], timeout=T_VENV, env=self.env, cwd=self.venv.parent)
        if res.returncode == 0 and self.py.exists():
            self.creator = "uv venv"
            if with_pip:
                self._pin_pip()
            return
        self.notes.append("uv venv failed, using -m venv: " + _tail(res.stdout, 3))
        if self.venv.exists():
            shutil.rmtree(self.venv)
        _check(
            _run([interp, "-m", "venv", str(self.venv)], timeout=T_VENV, env=self.env),
            "%s -m venv" % interp,
        )
        self.creator = "python -m venv"
        self._pin_pip()  # bundled pip may be ancient (pip 18 on 3.6)

    def _pip_spec(self) -> str:
        return "pip<22" if self.pyinfo["minor"] == "3.6" else "pip<24.1"

    def _pin_pip(self) -> None:
        _check(
            _run(
                [self.py, "-m", "pip", "install", "--quiet", "--upgrade", self._pip_spec()],
                timeout=T_SMALL,
                env=self.env,
            ),
            "pip install %s" % self._pip_spec(),
        )

    # -- installers ----------------------------------------------------------
    def _install(self, tool: str, args: Sequence[str], timeout: float = T_INSTALL):
        if tool == "uv":
            cmd = self.uv + [
                "pip",
                "install",
                "--python",
                str(self.py),
                "--refresh-package",
                "keepalive-guard",
                *args,
            ]
        else:
            cmd = [str(self.py), "-m", "pip", "install", "--no-input", *args]
        return _run(cmd, timeout=timeout, env=self.env, cwd=self.venv)

    def _constraints(self) -> list:
        if not _is_release_le(self.uvicorn, (0, 13, 4)):
            return []
        path = self.venv / "keepalive-guard-constraints.txt"
        path.write_text("uvloop<0.22\n")  # uvloop >= 0.22 breaks start-up of <= 0.13.4
        return ["-c", str(path)]

    def _extras(self) -> list:
        extras = list(EXTRA_PACKAGES)
        if interpreters.parse_release(self.uvicorn) >= UVICORN_WORKER_FROM:
            extras.append("uvicorn-worker")
        return extras

    def recipe_plain(self, tool: str) -> None:
        args = self._constraints() + ["uvicorn==" + self.uvicorn, *self._extras(), str(self.wheel)]
        _check(self._install(tool, args), "%s plain install" % tool)

    def recipe_no_deps(self, tool: str) -> None:
        _check(
            self._install(tool, ["--no-deps", "uvicorn==" + self.uvicorn]),
            "%s install --no-deps uvicorn" % tool,
        )
        base, httptools_pins = self._requirements()
        self.notes.append("no-deps: uvicorn requires " + ", ".join(base or ["nothing"]))
        reqs = base + [
            r
            for r in self._extras()
            if r != "httptools" and not any(_req_name(b) == r for b in base)
        ]
        _check(self._install(tool, reqs + [str(self.wheel)]), "%s install requirements" % tool)
        errors = []
        for spec in httptools_pins + list(HTTPTOOLS_FALLBACKS):
            res = self._install(tool, [spec])
            if res.returncode == 0:
                ok = _run(
                    [self.py, "-I", "-c", "import httptools"], timeout=T_VERIFY, cwd=self.venv
                )
                if ok.returncode == 0:
                    self.notes.append("no-deps: httptools from %r" % spec)
                    return
                errors.append("%s: installed but import failed: %s" % (spec, _tail(ok.stdout, 2)))
            else:
                errors.append("%s: %s" % (spec, _tail(res.stdout, 2)))
        raise EnvBuildError("no httptools installs:\n" + "\n".join(errors))

    def fix_wsproto(self, tool: str) -> None:
        """If wsproto (or uvicorn's wsproto_impl) does not import against the
        installed h11, step down to an older wsproto, keeping h11 as it is;
        the releases of OLD_WSPROTO_API get OLD_WSPROTO."""
        first_new, first_newer = OLD_WSPROTO_API
        if first_new <= interpreters.parse_release(self.uvicorn) < first_newer:
            _check(self._install(tool, list(OLD_WSPROTO)), "%s install %s" % (tool, OLD_WSPROTO))
            self.notes.append("wsproto's first API: " + ", ".join(OLD_WSPROTO))
        first = _run([self.py, "-I", "-c", _WSPROTO_CHECK], timeout=T_VERIFY, cwd=self.venv)
        if first.returncode == 0:
            return
        h11 = _run(
            [self.py, "-I", "-c", "import h11; print(h11.__version__)"],
            timeout=T_VERIFY,
            cwd=self.venv,
        )
        keep = ["h11==" + h11.stdout.strip().splitlines()[-1]] if h11.returncode == 0 else []
        for spec in WSPROTO_FALLBACKS:
            if self._install(tool, [spec] + keep).returncode != 0:
                continue
            if (
                _run(
                    [self.py, "-I", "-c", _WSPROTO_CHECK], timeout=T_VERIFY, cwd=self.venv
                ).returncode
                == 0
            ):
                self.notes.append(
                    "wsproto stepped down to %r (%s): newest did not import: %s"
                    % (spec, " ".join(keep), _tail(first.stdout, 1))
                )
                return
        # Nothing better: leave whatever is installed; the import check decides.

    def _skipped(self) -> set:
        if interpreters.parse_release(self.uvicorn) < WEBSOCKETS_REQUIRED_BEFORE:
            return SKIP_IN_NO_DEPS - {"websockets"}
        return SKIP_IN_NO_DEPS

    def _requirements(self):
        """Unconditional Requires-Dist of the installed uvicorn (minus skipped
        names) and uvicorn's own httptools specifiers (any marker/extra)."""
        pattern = str(
            self.venv / "lib" / "python*" / "site-packages" / "uvicorn-*.dist-info" / "METADATA"
        )
        found = glob.glob(pattern)
        if not found:
            raise EnvBuildError("no uvicorn METADATA under " + str(self.venv))
        base, httptools_pins = [], []
        for line in Path(found[0]).read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = line.split(":", 1)[1].strip()
            spec, _, marker = req.partition(";")
            spec = _normalize_spec(spec)
            name = _req_name(spec)
            if name == "httptools":
                pin = spec.replace(" ", "")
                if pin != "httptools" and pin not in httptools_pins:
                    httptools_pins.append(pin)
            if "extra" in marker or name in self._skipped():
                continue
            base.append(spec + (" ; " + marker.strip() if marker.strip() else ""))
        return base, httptools_pins


def _req_name(spec: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def _normalize_spec(spec: str) -> str:
    """'click (>=7.*)' -> 'click>=7' ; 'h11 (<0.10,>=0.8)' -> 'h11<0.10,>=0.8'.

    Wildcards are only valid with == and != (PEP 440); old uvicorn metadata
    has '>=7.*', which pip >= 24.1 rejects."""
    spec = spec.strip()
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._\-\[\], ]*?)\s*\((.*)\)\s*$", spec)
    if m:
        spec = m.group(1).strip() + m.group(2).strip()
    return re.sub(r"(>=|<=|~=|>|<)\s*([0-9][0-9.]*?)\.\*", r"\1\2", spec)


def _verify(py: Path, cwd: Path) -> dict:
    res = _run([py, "-I", "-c", VERIFY_SCRIPT], timeout=T_VERIFY, cwd=cwd)
    if res.returncode != 0:
        raise EnvBuildError("import check failed:\n" + _tail(res.stdout))
    return json.loads(res.stdout.strip().splitlines()[-1])


def build_env(
    uvicorn: str,
    python: str,
    wheel: Path,
    cache: Optional[Path] = None,
    recipes: Optional[Sequence[str]] = None,
    rebuild: bool = False,
    allow_unsupported: bool = False,
) -> dict:
    """Create or reuse an environment with uvicorn==*uvicorn* on *python*
    ("3.X" or an interpreter path) and the keepalive-guard *wheel*.

    *recipes* restricts/forces the install recipes tried (default: all, in
    order).  A Python outside interpreters.supported_pythons(uvicorn) is
    refused unless *allow_unsupported*.  Returns {"python", "versions",
    "recipe", "notes", ...}, also written as env-info.json in the environment."""
    wheel = Path(wheel).resolve()
    if not wheel.is_file():
        raise EnvBuildError("no such wheel: %s" % wheel)
    recipes = tuple(recipes) if recipes else RECIPES
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        raise EnvBuildError("unknown recipes %s (known: %s)" % (sorted(unknown), RECIPES))
    cache = Path(cache).expanduser() if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    pyinfo = _resolve_python(python)
    supported = interpreters.supported_pythons(uvicorn)
    if pyinfo["minor"] not in supported and not allow_unsupported:
        raise EnvBuildError(
            "uvicorn %s does not support Python %s (supported: %s)"
            % (uvicorn, pyinfo["minor"], ", ".join(supported))
        )
    wheel_sha = sha256_file(wheel)
    key = env_key(uvicorn, pyinfo, wheel_sha, recipes if recipes != RECIPES else ())
    venv = cache / ("uvicorn-%s-py%s-%s" % (uvicorn, pyinfo["minor"], key[:12]))
    info_path = venv / "env-info.json"

    with _FileLock(cache / ".locks" / (venv.name + ".lock")):
        if not rebuild and info_path.is_file() and _venv_python(venv).exists():
            info = json.loads(info_path.read_text())
            info["reused"] = True
            return info

        started = time.monotonic()
        builder = _Builder(uvicorn, pyinfo, wheel, venv)
        if info_path.exists():
            info_path.unlink()
        failures = []
        recipe = None
        checked = None
        for name in recipes:
            tool = "pip" if name.startswith("pip") else "uv"
            try:
                builder.create(with_pip=(tool == "pip"))
                if name.endswith("no-deps"):
                    builder.recipe_no_deps(tool)
                else:
                    builder.recipe_plain(tool)
                builder.fix_wsproto(tool)
                checked = _verify(builder.py, venv)
                recipe = name
                break
            except EnvBuildError as exc:
                failures.append("%s: %s" % (name, exc))
                builder.notes.append("recipe %s failed: %s" % (name, _tail(str(exc), 4)))
        if recipe is None:
            if venv.exists():
                shutil.rmtree(venv, ignore_errors=True)
            raise EnvBuildError(
                "uvicorn %s on Python %s: every recipe failed:\n%s"
                % (uvicorn, pyinfo["version"], "\n\n".join(failures))
            )
        if checked["checks"].get("wsproto_impl") not in ("ok", "absent"):
            builder.notes.append(
                "uvicorn's wsproto_impl does not import: " + checked["checks"]["wsproto_impl"]
            )
        info = {
            "python": str(builder.py),
            "versions": checked["versions"],
            "recipe": recipe,
            "notes": builder.notes,
            "uvicorn": uvicorn,
            "interpreter": pyinfo["executable"],
            "python_version": pyinfo["version"],
            "venv_creator": builder.creator,
            "checks": checked["checks"],
            "wheel": str(wheel),
            "wheel_sha256": wheel_sha,
            "recipe_version": RECIPE_VERSION,
            "key": key,
            "env_dir": str(venv),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        tmp = venv / "env-info.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, info_path)
        info["reused"] = False
        return info


def build_wheel(project_root: Path, out: Path, python: Optional[str] = None) -> Path:
    """Build the project's wheel with ``uv build --wheel`` into *out*; return its path."""
    project_root = Path(project_root).resolve()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kg-wheel-", dir=str(out)) as tmp:
        cmd = ensure_uv() + ["build", "--wheel", "--out-dir", tmp]
        if python:
            cmd += ["--python", python]
        env = _uv_env()
        env.pop("UV_PYTHON_DOWNLOADS", None)
        _check(
            _run(cmd + [str(project_root)], timeout=T_BUILD_WHEEL, env=env, cwd=project_root),
            "uv build --wheel",
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise EnvBuildError("expected one wheel, got %s" % [w.name for w in wheels])
        target = out / wheels[0].name
        os.replace(wheels[0], target)
    return target


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse one environment; print its JSON")
    b.add_argument("--uvicorn", required=True)
    b.add_argument("--python", required=True, help='"3.X" or an interpreter path')
    b.add_argument("--wheel", required=True, type=Path)
    b.add_argument("--cache", type=Path, default=None)
    b.add_argument(
        "--recipe",
        action="append",
        choices=RECIPES,
        help="force recipe(s) (repeatable; default: the whole chain)",
    )
    b.add_argument("--rebuild", action="store_true")
    b.add_argument(
        "--allow-unsupported",
        action="store_true",
        help="try even if the release does not support that Python",
    )
    w = sub.add_parser("wheel", help="build the project wheel")
    w.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent)
    w.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            info = build_env(
                args.uvicorn,
                args.python,
                args.wheel,
                args.cache,
                recipes=args.recipe,
                rebuild=args.rebuild,
                allow_unsupported=args.allow_unsupported,
            )
            print(json.dumps(info, indent=2))
        else:
            print(build_wheel(args.project, args.out))
    except (EnvBuildError, LookupError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
