"""Find CPython 3.6-3.13 interpreters and say which ones a uvicorn release supports.

Tooling, not runtime code, but kept importable on Python 3.6 so that any
interpreter can use it.

Sources for ``find_interpreters()``, first match per minor wins:

1. ``KEEPALIVE_GUARD_PYTHONS``: ``os.pathsep``-separated interpreter paths.
   When set (non-empty), *only* these are used.
2. ``python3.X`` found on ``PATH``.
3. ``<pyenv root>/versions/*/bin/python``, the pyenv roots being ``$PYENV_ROOT``,
   the output of ``pyenv root`` (when pyenv is on PATH) and pyenv's default
   ``~/.pyenv``.  The newest patch release of a minor wins; pyenv-virtualenv
   environments (directories with a ``pyvenv.cfg``) are skipped.

Each candidate is asked for its version with one subprocess (cached in this
process).  A candidate that does not answer (for example a pyenv shim for a
version that is not selected) is skipped.  The path returned is the
interpreter's own ``sys.executable`` so that pyenv shims are resolved.

Run ``python compat/interpreters.py`` to print what is found, or
``python compat/interpreters.py 0.16.0`` to also print the supported minors.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

MINORS = ["3.%d" % m for m in range(6, 14)]  # "3.6" .. "3.13"
ENV_VAR = "KEEPALIVE_GUARD_PYTHONS"
QUERY_TIMEOUT = 30  # seconds, per interpreter

_QUERY = (
    "import sys, platform, json; "
    "print(json.dumps({'version': list(sys.version_info[:3]), "
    "'executable': sys.executable, "
    "'implementation': platform.python_implementation()}))"
)

_info_cache: Dict[str, Optional[dict]] = {}


def interpreter_info(path: str) -> Optional[dict]:
    """Return {"version": "3.X.Y", "minor": "3.X", "executable", "implementation"}
    for the interpreter at *path*, or None if it cannot be run.  Cached."""
    key = os.path.abspath(path)
    if key in _info_cache:
        return _info_cache[key]
    info = None
    try:
        proc = subprocess.run(
            [path, "-I", "-c", _QUERY],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=QUERY_TIMEOUT,
        )
        if proc.returncode == 0:
            data = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
            major, minor, micro = data["version"]
            exe = data.get("executable") or ""
            if not exe or not os.path.exists(exe):
                exe = key
            info = {
                "version": "%d.%d.%d" % (major, minor, micro),
                "minor": "%d.%d" % (major, minor),
                "executable": exe,
                "implementation": data.get("implementation", ""),
                "path": key,
            }
    except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
        info = None
    _info_cache[key] = info
    return info


def _version_tuple(text: str) -> Tuple[int, ...]:
    nums = re.findall(r"\d+", text)
    return tuple(int(n) for n in nums[:3])


def _pyenv_roots() -> List[str]:
    roots: List[str] = []
    env_root = os.environ.get("PYENV_ROOT")
    if env_root:
        roots.append(env_root)
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            proc = subprocess.run(
                [pyenv, "root"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                timeout=QUERY_TIMEOUT,
            )
            out = proc.stdout.decode("utf-8", "replace").strip()
            if proc.returncode == 0 and out:
                roots.append(out)
        except (OSError, subprocess.TimeoutExpired):
            pass
    roots.append(os.path.expanduser("~/.pyenv"))  # pyenv's own default
    seen = set()
    result = []
    for root in roots:
        real = os.path.realpath(root)
        if real not in seen and os.path.isdir(os.path.join(real, "versions")):
            seen.add(real)
            result.append(real)
    return result


def _pyenv_candidates() -> List[str]:
    """Interpreters under each pyenv root, newest patch release first."""
    found: List[Tuple[Tuple[int, ...], str]] = []
    for root in _pyenv_roots():
        versions = os.path.join(root, "versions")
        try:
            names = os.listdir(versions)
        except OSError:
            continue
        for name in names:
            vdir = os.path.join(versions, name)
            if os.path.exists(os.path.join(vdir, "pyvenv.cfg")):
                continue  # a pyenv-virtualenv environment, not an interpreter
            exe = os.path.join(vdir, "bin", "python")
            if os.path.isfile(exe) and os.access(exe, os.X_OK):
                found.append((_version_tuple(name), exe))
    found.sort(key=lambda item: item[0], reverse=True)
    return [exe for _, exe in found]


def _path_candidates() -> List[str]:
    result = []
    for minor in MINORS:
        exe = shutil.which("python" + minor)
        if exe:
            result.append(exe)
    return result


def find_interpreters(cpython_only: bool = True) -> Dict[str, str]:
    """Map "3.6".."3.13" to an interpreter path (only the minors found).

    Interpreters listed explicitly in KEEPALIVE_GUARD_PYTHONS are accepted
    whatever their implementation; the PATH and pyenv sources only yield
    CPython unless *cpython_only* is false.
    """
    result: Dict[str, str] = {}
    explicit = os.environ.get(ENV_VAR, "")
    if explicit.strip():
        for path in explicit.split(os.pathsep):
            path = path.strip()
            if not path:
                continue
            info = interpreter_info(os.path.expanduser(path))
            if info and info["minor"] in MINORS and info["minor"] not in result:
                result[info["minor"]] = info["executable"]
        return _ordered(result)

    for path in _path_candidates() + _pyenv_candidates():
        info = interpreter_info(path)
        if not info or info["minor"] not in MINORS or info["minor"] in result:
            continue
        if cpython_only and info["implementation"] != "CPython":
            continue
        result[info["minor"]] = info["executable"]
    return _ordered(result)


def _ordered(mapping: Dict[str, str]) -> Dict[str, str]:
    return {m: mapping[m] for m in MINORS if m in mapping}


def find_interpreter(minor: str) -> str:
    """Path of the interpreter for "3.X"; raises LookupError if none found."""
    found = find_interpreters()
    if minor not in found:
        raise LookupError(
            "no Python %s interpreter found (found: %s); set %s"
            % (minor, ", ".join(found) or "none", ENV_VAR)
        )
    return found[minor]


def parse_release(version: str) -> Tuple[int, ...]:
    """ "0.17.0.post1" -> (0, 17, 0); "0.27.0" -> (0, 27, 0)."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise ValueError("not a uvicorn version: %r" % (version,))
    parts = tuple(int(p) for p in match.group(1).split("."))
    return (parts + (0, 0, 0))[:3]


# (first release of the range, oldest supported minor), newest first.
# From UVICORN-HISTORY.md, "Python and dependency pins".  Releases up to
# 0.16.0 declare 3.6-3.10 by classifiers but install and serve on 3.11-3.13
# with the no-deps fallback, so their range starts at 3.6 and runs to 3.13.
_FLOORS = [
    ((0, 55, 0), 11),  # 0.55.0: >=3.11
    ((0, 40, 0), 10),  # 0.40.0-0.54.0: >=3.10
    ((0, 34, 0), 9),  # 0.34.0-0.39.0: >=3.9
    ((0, 23, 0), 8),  # 0.23.0-0.33.0: >=3.8
    ((0, 17, 0), 7),  # 0.17.0.post1-0.22.0: >=3.7 (0.17.0 itself is yanked)
    ((0, 0, 0), 6),  # up to 0.16.0: 3.6+
]


#: 0.2.x import websockets from their protocol modules, and no websockets
#: release both works with their code and imports on 3.7+ here (asyncio.coroutine
#: is gone in 3.11; newer websockets lack their WebSocketCommonProtocol API):
#: they run on 3.6 only.
_CEILINGS = [((0, 3, 0), 13), ((0, 0, 0), 6)]


def supported_pythons(uvicorn_version: str) -> List[str]:
    """Minors "3.6".."3.13" on which *uvicorn_version* can be installed and imported here."""
    release = parse_release(uvicorn_version)
    floor = next(minor for first, minor in _FLOORS if release >= first)
    ceiling = next(minor for first, minor in _CEILINGS if release >= first)
    return ["3.%d" % m for m in range(floor, ceiling + 1)]


def _main(argv: List[str]) -> int:
    out: dict = {"interpreters": find_interpreters()}
    for version in argv:
        out.setdefault("supported", {})[version] = supported_pythons(version)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
