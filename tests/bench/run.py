#!/usr/bin/env python3
"""keepalive-guard benchmarks: the guard's cost on a real uvicorn server (issue #5).

One command, from the repository root::

    python3 tests/bench/run.py            # full run (about 2 hours on 2 cores)
    python3 tests/bench/run.py --quick    # smoke run, under 3 minutes once the
                                          # environments exist (first build ~1 min)
    python3 tests/bench/run.py --render   # rewrite docs/benchmarks.md from results.json
    python3 tests/bench/run.py --only hook --only activation
                                          # re-run sections into the existing
                                          # results.json (recorded as a re-run;
                                          # --fresh starts a new file instead)

It builds what it needs, runs every section and writes ``tests/bench/results.json``
and its rendering, the project's benchmarks page ``docs/benchmarks.md``
(``--quick`` writes ``tests/bench/RESULTS-quick.md`` / ``results-quick.json``, and
``--out X.json`` writes ``X.json`` with its ``.md`` beside it).

Environments: the project wheel is built with ``compat/envs.py build_wheel``
into ``tests/bench/.work/dist``; one environment per uvicorn release with
``compat/envs.py build_env(release, python, wheel)`` in a cache of its own
(``$KEEPALIVE_GUARD_BENCH_CACHE``, default ``~/.cache/keepalive-guard/bench-envs``,
so that the extras never touch the test environments), then
``uv pip install fastapi uvloop`` into it (``uvloop<0.22`` for uvicorn <= 0.13.4,
whose start-up breaks with newer uvloop).  More environments for the start-up
hook, made anew each run: without and with the wheel, and one per other hook
it is compared with, each as a venv and as a stand-in for a system-wide
install, on the benchmark's interpreter and (for instruction counts) on every
interpreter found.  wrk is installed with apt-get if missing.

Sections (``--only`` picks some):

``throughput``  hello-world ASGI app and a small FastAPI app; per release x
                h11/httptools x asyncio/uvloop: arms ``none`` (unguarded),
                ``global`` (``keepalive_guard.install()`` before uvicorn starts)
                and ``route`` (``Config(http=keepalive_guard.protocols.<Class>)``,
                reported "not available" when that module does not import).
                Every pair starts fresh servers for its arms, side by side
                on CPU 0 (each idle while another is measured), and stops
                them after; wrk on CPU 1 runs the arms in ABC / CBA order to
                cancel drift.  Loads: keep-alive, 64 connections; 16-deep
                pipelining, 64 connections.
``duet``        the same cases side by side: each round starts a server per
                arm, plus ``control`` (a second unguarded server), all at once
                on CPU 0, each under its own wrk on CPU 1 at the same time, so
                that the machine's other work slows every arm alike (duet
                benchmarking); the start order rotates each round.
``decompose``   duet rounds on 0.12.2 (the release with the most fixes),
                keep-alive, hello, asyncio, with the global patch taken apart:
                ``nofix`` (the package installed, no fix selected) and
                ``passthrough`` (no guard; uvicorn's on_response_complete
                behind a plain function that calls it) beside none, control
                and global.
``instructions``  instructions per request of the server, counted by
                valgrind's callgrind, with its cache and branch-predictor
                simulation (estimated cycles, mispredicted branches) and
                object allocations (allocator calls, fresh pymalloc pools): hello
                app, asyncio and uvloop; arms none, global, route, each in 3
                server processes (their median; the unguarded processes'
                spread is the count's own noise floor), and the unguarded
                first release with the upstream fixes; quick: asyncio, none
                and global.  Independent of the other work on the machine.
``memory``      RSS (VmRSS) of fresh servers after 200k keep-alive requests.
``retention``   1,000 connections reset by the client (SO_LINGER 0, close),
                after the response and in the middle of a request; live
                protocol and cycle objects counted inside the server
                (``/_objects``: gc.collect + gc.get_objects by class name) right
                after, and again after ``timeout_keep_alive`` + 2 s (BUGS.md R5).
``activation``  ``import keepalive_guard.auto`` (+ install) with uvicorn
                imported, in fresh processes (tests/bench/activation.py).
``hook``        interpreter start-up, ``python -c pass``, with and without the
                wheel (its keepalive_guard.pth) in two otherwise identical venvs,
                and in one more per other start-up hook to compare with
                (``COMPARED_HOOKS``); without and with the wheel again outside
                a venv (a system-wide install's layout, where site.py reads a
                .pth once, not twice); the same environments on every
                interpreter found (3.6-3.13) for the instruction counts alone.
``micro``       per-call cost of the guard's wrappers on uvicorn's per-request
                path (tests/bench/micro.py).

Only 127.0.0.1 is used.  Every server is started by this script and stopped by
its PID (SIGTERM, then SIGKILL after 10 s); every wait and loop is bounded.
"""

import argparse
import ast
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = HERE / ".work"
LUA = HERE / "bench.lua"
LUA_SHOWN = "tests/bench/bench.lua"  # as the recorded example commands give it
SERVER = HERE / "bench_server.py"
sys.path.insert(0, str(ROOT / "compat"))

import envs  # noqa: E402  (compat/envs.py)
import interpreters  # noqa: E402  (compat/interpreters.py)

RELEASES = ("0.12.2", "0.27.0", "0.54.0")
IMPLS = ("h11", "httptools")
ARMS = ("none", "global", "route")
SECTIONS = (
    "throughput",
    "duet",
    "decompose",
    "instructions",
    "memory",
    "retention",
    "activation",
    "hook",
    "micro",
)
SERVER_CPU = "0"
CLIENT_CPU = "1"

FULL = {
    "releases": RELEASES,
    "impls": IMPLS,
    "loops": ("asyncio", "uvloop"),
    "apps": ("hello", "fastapi"),
    "loads": ("keepalive", "pipeline16"),
    "pairs": 5,
    "duet_rounds": 8,
    "decompose_rounds": 16,
    "duration": 3,
    "warmup": 1,
    "connections": 64,
    "mem_requests": 200000,
    "mem_pairs": 5,
    "ret_connections": 1000,
    "ret_keepalive": 5,
    "act_runs": 40,
    "hook_runs": 400,
    "hook_pythons": True,  # also count start-up instructions on every interpreter found
    "hook_compared": True,  # also measure the COMPARED_HOOKS
    "micro_rounds": 7,
    "micro_number": 20000,
    "micro_requests": 2000,
    "cg_requests": 1008,  # per load, a multiple of 16
    "cg_loops": ("asyncio", "uvloop"),
    "cg_arms": ("none", "global", "route"),
    "cg_processes": 3,  # servers per arm: counts differ a little between processes
    "cg_reference": True,  # also count the first release with the upstream fixes
    "quiet_wait": 10,  # max seconds to wait for the machine to calm down before a pair
    "quiet_budget": 2400,  # max seconds of such waiting in the whole run
}
QUICK = dict(
    FULL,
    releases=("0.12.2",),
    loops=("asyncio",),
    apps=("hello",),
    pairs=2,
    duet_rounds=1,
    decompose_rounds=1,
    duration=1,
    warmup=1,
    mem_requests=10000,
    mem_pairs=1,
    ret_connections=100,
    ret_keepalive=1,
    act_runs=6,
    hook_runs=40,
    hook_pythons=False,
    hook_compared=False,
    micro_rounds=3,
    micro_number=5000,
    micro_requests=300,
    cg_requests=160,
    cg_loops=("asyncio",),
    cg_arms=("none", "global"),
    cg_processes=1,
    cg_reference=False,
    quiet_wait=2,
    quiet_budget=10,
)

TARGETS = {
    "throughput_ratio_min": 0.99,
    "p99_ratio_max": 1.02,
    "rss_ratio_max": 1.01,
    "retained_max": 0,
    "activation_ms_max": 25.0,  # the developers' guide: <= 25 ms with uvicorn imported
    "hook_ms_max": 0.2,
}

LIVE = {}  # pid -> Server, for the final clean-up


def log(*parts):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print("[{}]".format(stamp), *parts, flush=True)


def run(cmd, timeout, env=None, check=True, **kwargs):
    """subprocess.run with a bound; returns CompletedProcess (text)."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
        text=True,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            "{} failed (rc={}):\n{}".format(
                " ".join(str(c) for c in cmd), proc.returncode, proc.stdout[-3000:]
            )
        )
    return proc


def clean_env():
    """The environment for benchmark children: no guard switches, no venv leaks."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("KEEPALIVE_GUARD") or name in ("PYTHONPATH", "VIRTUAL_ENV"):
            del env[name]
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def pin(cpu):
    return ["taskset", "-c", cpu] if TASKSET else []


TASKSET = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


# ---------------------------------------------------------------------------
# set-up


def ensure_wrk():
    if shutil.which("wrk"):
        return
    log("wrk missing: apt-get install -y wrk")
    proc = run(["apt-get", "install", "-y", "wrk"], timeout=900, check=False)
    if proc.returncode != 0:
        run(["apt-get", "update"], timeout=900, check=False)
        run(["apt-get", "install", "-y", "wrk"], timeout=900)
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is still missing after apt-get install")


def bench_cache():
    override = os.environ.get("KEEPALIVE_GUARD_BENCH_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(os.path.expanduser("~/.cache/keepalive-guard/bench-envs"))


def _le(release, bound):
    return tuple(int(x) for x in release.split(".")[:3]) <= bound


def build_environments(releases, python):
    """Wheel, one environment per release (+ fastapi, uvloop), and their versions."""
    log("building the wheel")
    wheel = envs.build_wheel(ROOT, WORK / "dist")
    for old in (WORK / "dist").glob("*.whl"):
        if old != wheel:
            old.unlink()
    cache = bench_cache()
    uv = envs.ensure_uv()
    result = {"wheel": str(wheel), "wheel_sha256": envs.sha256_file(wheel), "envs": {}}
    for release in releases:
        info = envs.build_env(release, python, wheel, cache=cache)
        py = info["python"]
        marker = Path(info["env_dir"]) / "bench-extras.json"
        if not marker.is_file():
            log("uvicorn {}: uv pip install fastapi uvloop".format(release))
            extras = ["fastapi", "uvloop"]
            constraint = []
            if _le(release, (0, 13, 4)):
                cfile = Path(info["env_dir"]) / "bench-constraints.txt"
                cfile.write_text("uvloop<0.22\n")
                constraint = ["-c", str(cfile)]
            run(uv + ["pip", "install", "--python", py] + constraint + extras, timeout=900)
            marker.write_text(json.dumps({"extras": extras, "constraint": constraint}))
        versions = json.loads(
            run(
                [
                    py,
                    "-c",
                    "import json\nfrom importlib import metadata as m\n"
                    "out={}\nfor n in ('uvicorn','h11','httptools','uvloop','fastapi',"
                    "'starlette','pydantic','keepalive-guard','wrapt','packaging'):\n"
                    "    try: out[n]=m.version(n)\n    except Exception: out[n]=None\n"
                    "import sys; out['python']=sys.version.split()[0]\nprint(json.dumps(out))",
                ],
                timeout=120,
                env=clean_env(),
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        result["envs"][release] = {
            "python": py,
            "env_dir": info["env_dir"],
            "recipe": info.get("recipe"),
            "versions": versions,
        }
        log("uvicorn {}: {}".format(release, py))
    prune(cache, {Path(e["env_dir"]).name for e in result["envs"].values()})
    return result


def prune(cache, keep, max_age=3 * 86400):
    """Remove this cache's environments of the same releases built for older wheels,
    once unused for ``max_age`` seconds (another run may still be using a recent one)."""
    prefixes = {name.rsplit("-", 1)[0] for name in keep}
    now = time.time()
    for path in cache.glob("uvicorn-*"):
        if path.name in keep or not path.is_dir():
            continue
        if path.name.rsplit("-", 1)[0] not in prefixes:
            continue
        try:
            age = now - max(p.stat().st_mtime for p in (path, path / "env-info.json") if p.exists())
        except (OSError, ValueError):
            continue
        if age > max_age:
            shutil.rmtree(str(path), ignore_errors=True)


# Start-up hooks measured beside ours, in the same interleaved runs, by name:
# what the report calls each and what it stands for (both written into the
# results, so the report needs no list of its own), and the files its venv's
# site-packages holds (its .pth first).
BOOT_FILE = ("_keepalive_guard_boot.py", None)  # the module those lines boot, from this tree
COMPARED_HOOKS = {
    "any-pth": {
        "label": "a .pth whose line does nothing",
        "stands_for": "what site.py costs to read a .pth file and run one line, whatever the "
        "line does (in a venv site.py reads every .pth twice: python/cpython#75723)",
        "files": (("hook_any.pth", "import os\n"),),
    },
    "floor": {
        "label": "a .pth importing an empty module",
        "stands_for": "the least any .pth hook that imports a module costs, as ours does",
        "files": (("hook_floor.pth", "import _hook_floor\n"), ("_hook_floor.py", "")),
    },
    "env-only": {
        "label": "a .pth line that only reads KEEPALIVE_GUARD",
        "stands_for": "the one cheaper design: it installs no finder, so without the "
        "variable `--http guarded` is unknown to uvicorn < 0.36 (where --http is a fixed choice)",
        "files": (
            (
                "hook_env_only.pth",
                'import os; os.environ.get("KEEPALIVE_GUARD") and '
                '__import__("_keepalive_guard_boot").boot()\n',
            ),
            BOOT_FILE,
        ),
    },
    "argv-check": {
        "label": "a .pth line that reads KEEPALIVE_GUARD and the command line",
        "stands_for": "a design between the two: it boots only if the variable is set or the "
        "command line says `guarded`, so `--http guarded` works on the command line but not "
        'in code (`Config(http="guarded")`) nor in the processes `--workers` and `--reload` '
        "spawn, whose command line is multiprocessing's (Python 3.6 sets sys.argv after "
        "site.py runs: there it always boots)",
        "files": (
            (
                "hook_argv_check.pth",
                'import os, sys; ("guarded" in str(getattr(sys, "argv", "guarded")) or '
                'os.environ.get("KEEPALIVE_GUARD")) and '
                '__import__("_keepalive_guard_boot").boot()\n',
            ),
            BOOT_FILE,
        ),
    },
}


def build_hook_envs(python, wheel, hooks, folder="."):
    """Interpreter environments on one interpreter, made anew each run and
    identical but for what their site-packages holds: ``without`` (nothing),
    ``with`` (the wheel, which has no dependencies) and one per entry of
    ``hooks`` (its files only), each compiled to .pyc as pip's install does.

    In two layouts, ``venv`` (``uv venv``) and ``system`` (``system_prefix``):
    site.py reads every .pth of a venv twice (python/cpython#75723), and a
    system-wide or container-image install's once.  Returns
    ``{"venv": {arm: python}, "system": {arm: python}, "pth": path, "pth_text": text,
    "present": {layout: [.pth files]}}`` (the wheel's .pth, in the venv; the .pth
    files an environment holds before anything is added, as uv's venvs on
    3.6-3.9 hold its ``_virtualenv.pth``)."""
    cache = bench_cache() / folder
    uv = envs.ensure_uv()
    interp = envs._resolve_python(python)["executable"]
    installation = run(  # its binary and standard library, for system_prefix
        [
            interp,
            "-c",
            "import os, sys, sysconfig; "
            "print(os.path.realpath(sys.executable)); print(sysconfig.get_paths()['stdlib'])",
        ],
        60,
    ).stdout.splitlines()
    out = {"venv": {}, "system": {}, "present": {}}
    for layout in ("venv", "system"):
        for arm in ["without", "with"] + list(hooks):
            home = cache / "hook-{}-{}".format(layout, arm)
            shutil.rmtree(str(home), ignore_errors=True)
            if layout == "venv":
                run(uv + ["venv", "--no-project", "--quiet", "--python", interp, str(home)], 300)
                py = str(home / "bin" / "python")
            else:
                py = system_prefix(installation, home)
            site = Path(
                run(
                    [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60
                ).stdout.strip()
            )
            if arm == "without":
                out["present"][layout] = sorted(path.name for path in site.glob("*.pth"))
            if arm == "with":
                run(uv + ["pip", "install", "--python", py, "--system", str(wheel)], 600)
                if layout == "venv":
                    out["pth"] = str(site / "keepalive_guard.pth")
                    out["pth_text"] = (site / "keepalive_guard.pth").read_text()
            for filename, text in hooks[arm]["files"] if arm in hooks else ():
                (site / filename).write_text(
                    (ROOT / filename).read_text() if text is None else text
                )
            run([py, "-m", "compileall", "-q", str(site)], 300, env=clean_env())
            out[layout][arm] = py
    return out


def system_prefix(installation, home):
    """A stand-in at ``home`` for a system-wide install of the interpreter
    whose binary and standard library are ``installation`` (two paths), with
    a site-packages of its own, empty: the binary copied (it starts from
    ``home``, so that is its prefix), every other entry of the installation's
    ``lib`` (the shared libpython, the standard library's files) linked."""
    binary, stdlib = installation[0], Path(installation[1])
    lib = home / "lib" / stdlib.name
    (lib / "site-packages").mkdir(parents=True)
    (home / "bin").mkdir()
    shutil.copy2(binary, str(home / "bin" / "python"))
    for src, dest in ((stdlib.parent, lib.parent), (stdlib, lib)):
        for entry in src.iterdir():
            if entry.name not in (stdlib.name, "site-packages"):
                (dest / entry.name).symlink_to(entry)
    return str(home / "bin" / "python")


# ---------------------------------------------------------------------------
# servers and clients


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server(object):
    def __init__(self, py, http, loop, app, mode, keep_alive=5, wrapper=(), env=None, extra=()):
        self.py, self.http, self.loop, self.app, self.mode = py, http, loop, app, mode
        self.keep_alive = keep_alive
        self.wrapper = list(wrapper)  # e.g. valgrind, between taskset and python
        self.extra = list(extra)  # more bench_server.py options
        self.env = env or {}
        self.port = free_port()
        self.proc = None
        self.error = None
        self.info = None
        self.logfile = None

    def cmd(self):
        return (
            pin(SERVER_CPU)
            + self.wrapper
            + [
                self.py,
                str(SERVER),
                "--port",
                str(self.port),
                "--http",
                self.http,
                "--loop",
                self.loop,
                "--app",
                self.app,
                "--mode",
                self.mode,
                "--timeout-keep-alive",
                str(self.keep_alive),
            ]
            + self.extra
        )

    def start(self, timeout=60):
        """Launch the server and wait until it answers: True, or False with ``error``."""
        self.launch()
        return self.ready(timeout)

    def launch(self):
        WORK.mkdir(parents=True, exist_ok=True)
        self.logfile = tempfile.NamedTemporaryFile(
            prefix="server-", suffix=".log", dir=str(WORK), delete=False
        )
        self.proc = subprocess.Popen(
            [str(c) for c in self.cmd()],
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(clean_env(), **self.env),
        )
        LIVE[self.proc.pid] = self

    def ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.error = "exited with status {}: {}".format(
                    self.proc.returncode, self.log_tail()
                )
                LIVE.pop(self.proc.pid, None)
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.error = "not listening after {} s: {}".format(timeout, self.log_tail())
            self.stop()
            return False
        try:
            self.info = json.loads(http_get(self.port, "/_info"))
        except Exception as exc:
            self.error = "no /_info: {!r}: {}".format(exc, self.log_tail())
            self.stop()
            return False
        return True

    def log_tail(self, lines=8):
        try:
            with open(self.logfile.name, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kb(self):
        fields = {}
        with open("/proc/{}/status".format(self.proc.pid)) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        return fields

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            LIVE.pop(getattr(self.proc, "pid", None), None)
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        LIVE.pop(self.proc.pid, None)
        try:
            os.unlink(self.logfile.name)
        except OSError:
            pass


def stop_all():
    for server in list(LIVE.values()):
        try:
            server.stop()
        except Exception:
            pass


def http_get(port, path, timeout=30):
    """GET (Connection: close); returns the body as str once Content-Length bytes arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".format(path).encode()
        )
        raw = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length is not None and len(body) >= length:
                    break
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("GET {}: {!r}".format(path, head[:100]))
    return body.decode()


def cpu_ticks():
    """Busy ticks per CPU from /proc/stat: {"cpu0": n, "cpu1": n, ...}."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                out[parts[0]] = sum(values[:8]) - idle
    return out


def process_ticks(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def process_cpu_ns(pid):
    """CPU time of every thread of ``pid`` (ns), from /proc/<pid>/task/*/schedstat."""
    total = 0
    try:
        for tid in os.listdir("/proc/{}/task".format(pid)):
            with open("/proc/{}/task/{}/schedstat".format(pid, tid)) as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def wrk_argv(port, depth, duration, connections, stop_after=0, lua=None):
    """The pinned wrk command line of one run (``lua``: the script path to show)."""
    return pin(CLIENT_CPU) + [
        "wrk",
        "-t{}".format(connections),
        "-c{}".format(connections),
        "-d{}s".format(duration),
        "--timeout",
        "10s",
        "-s",
        lua or str(LUA),
        "http://127.0.0.1:{}/".format(port),
        "--",
        str(depth),
        str(stop_after),
    ]


def wrk(port, depth, duration, connections, stop_after=0, timeout=None, server_pid=None):
    """One wrk run; returns the parsed WRKJSON dict plus derived figures.

    With ``server_pid``, also the share of each pinned CPU that other processes
    (not this server, not wrk) used during the run: ``foreign_server_cpu`` and
    ``foreign_client_cpu`` (0.0 = the CPU was ours alone, 1.0 = a whole CPU)."""
    t_start = time.monotonic()
    cpu0 = cpu_ticks()
    srv0 = process_ticks(server_pid) if server_pid else None
    ns0 = process_cpu_ns(server_pid) if server_pid else None
    child0 = os.times()
    child0 = child0.children_user + child0.children_system
    cmd = wrk_argv(port, depth, duration, connections, stop_after)
    env = clean_env()
    if stop_after:
        WORK.mkdir(parents=True, exist_ok=True)
        done = tempfile.NamedTemporaryFile(prefix="wrk-done-", dir=str(WORK), delete=False)
        done.close()
        env["WRK_DONE_FILE"] = done.name
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            universal_newlines=True,
        )
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and proc.poll() is None:
            with open(done.name) as f:
                if len(f.read().split()) >= connections:
                    break
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        os.unlink(done.name)
    else:
        out = run(cmd, timeout=timeout or duration + 60, env=env, check=False).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError("wrk printed no WRKJSON:\n" + out[-2000:])
    data = json.loads(line[len("WRKJSON ") :])
    hist = sorted((int(k), v) for k, v in data.pop("hist").items())
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["p50_us"] = percentile(hist, 50)
    data["p99_us"] = percentile(hist, 99)
    data["errors"] = sum(data[k] for k in data if k.startswith("err_"))
    elapsed = time.monotonic() - t_start
    cpu1 = cpu_ticks()
    child1 = os.times()
    child1 = child1.children_user + child1.children_system
    ns1 = process_cpu_ns(server_pid) if server_pid else None
    if ns0 is not None and ns1 is not None and data["requests"]:
        data["server_cpu_us_per_req"] = (ns1 - ns0) / 1e3 / data["requests"]
    if server_pid and TASKSET:
        srv1 = process_ticks(server_pid)
        scpu, ccpu = "cpu" + SERVER_CPU, "cpu" + CLIENT_CPU
        if srv0 is not None and srv1 is not None and scpu in cpu1 and ccpu in cpu1:
            busy_s = (cpu1[scpu] - cpu0[scpu]) / float(TICK)
            busy_c = (cpu1[ccpu] - cpu0[ccpu]) / float(TICK)
            data["server_cpu"] = (srv1 - srv0) / float(TICK) / elapsed
            data["foreign_server_cpu"] = max(0.0, busy_s - (srv1 - srv0) / float(TICK)) / elapsed
            data["foreign_client_cpu"] = max(0.0, busy_c - (child1 - child0)) / elapsed
    return data


def percentile(hist, p):
    total = sum(n for _, n in hist)
    if not total:
        return None
    rank = max(1, int(math.ceil(p / 100.0 * total)))
    seen = 0
    for value, n in hist:
        seen += n
        if seen >= rank:
            return value
    return hist[-1][0]


# ---------------------------------------------------------------------------
# statistics


def ratio_summary(pairs, key, arm, base="none"):
    """Median, min, max of per-pair ratios arm/base of ``key``."""
    ratios = []
    for pair in pairs:
        a, b = pair.get(arm), pair.get(base)
        if a and b and a.get(key) and b.get(key):
            ratios.append(a[key] / b[key])
    if not ratios:
        return None
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "n": len(ratios),
        "ratios": ratios,
    }


def spread_pct(values):
    values = [v for v in values if v]
    if len(values) < 2:
        return None
    return 100.0 * (max(values) - min(values)) / statistics.median(values)


QUIET_BUDGET = {"left": 0.0, "waited": 0.0, "gave_up": 0}


def wait_quiet(max_wait, threshold=0.2, window=0.5):
    """Wait (at most ``max_wait`` s, and only while the run's wait budget lasts) until
    the other processes on the machine leave both CPUs mostly idle for ``window`` s.
    Our own servers are idle between runs, so all busy time then is someone else's.
    Returns (seconds waited, quiet reached)."""
    t0 = time.monotonic()
    deadline = t0 + min(max_wait, max(0.0, QUIET_BUDGET["left"]))
    quiet = False
    while True:
        a = cpu_ticks()
        time.sleep(window)
        b = cpu_ticks()
        busy = [(b[k] - a[k]) / float(TICK) / window for k in b if k in a]
        if busy and max(busy) < threshold:
            quiet = True
            break
        if time.monotonic() >= deadline:
            break
    waited = time.monotonic() - t0
    QUIET_BUDGET["left"] -= waited
    QUIET_BUDGET["waited"] += waited
    if not quiet:
        QUIET_BUDGET["gave_up"] += 1
    return waited, quiet


QUIET = 0.15  # a pair is "quiet" if others used < 15% of either pinned CPU in each of its runs


def quiet_pairs(pairs):
    out = []
    for pair in pairs:
        shares = [
            r.get(k) for r in pair.values() for k in ("foreign_server_cpu", "foreign_client_cpu")
        ]
        if shares and all(v is not None and v < QUIET for v in shares):
            out.append(pair)
    return out


def summarise_ab(pairs, arms):
    summary = {}
    quiet = quiet_pairs(pairs)
    foreign = [
        r.get("foreign_server_cpu")
        for p in pairs
        for r in p.values()
        if r.get("foreign_server_cpu") is not None
    ]
    summary["foreign_server_cpu_median"] = statistics.median(foreign) if foreign else None
    summary["quiet_pairs"] = len(quiet)
    base_runs = [p["none"] for p in pairs if p.get("none")]
    summary["none"] = {
        "rps_median": statistics.median([r["rps"] for r in base_runs]) if base_runs else None,
        "p50_us_median": statistics.median([r["p50_us"] for r in base_runs]) if base_runs else None,
        "p99_us_median": statistics.median([r["p99_us"] for r in base_runs]) if base_runs else None,
        "rps_spread_pct": spread_pct([r["rps"] for r in base_runs]),
        "cpu_us_per_req_median": statistics.median(
            [r["server_cpu_us_per_req"] for r in base_runs if r.get("server_cpu_us_per_req")]
        )
        if any(r.get("server_cpu_us_per_req") for r in base_runs)
        else None,
        "errors": sum(r["errors"] for r in base_runs),
    }
    for arm in arms:
        if arm == "none":
            continue
        runs = [p[arm] for p in pairs if p.get(arm)]
        if not runs:
            continue
        summary[arm] = {
            "rps_median": statistics.median([r["rps"] for r in runs]),
            "p50_us_median": statistics.median([r["p50_us"] for r in runs]),
            "p99_us_median": statistics.median([r["p99_us"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "rps_ratio": ratio_summary(pairs, "rps", arm),
            "p50_ratio": ratio_summary(pairs, "p50_us", arm),
            "p99_ratio": ratio_summary(pairs, "p99_us", arm),
            "cpu_per_req_ratio": ratio_summary(pairs, "server_cpu_us_per_req", arm),
            "quiet_rps_ratio": ratio_summary(quiet, "rps", arm),
            "quiet_p99_ratio": ratio_summary(quiet, "p99_us", arm),
        }
    return summary


# ---------------------------------------------------------------------------
# sections


LOADS = {"keepalive": 1, "pipeline16": 16}


# The side-by-side arms: ``control`` is a second unguarded server, whose ratio
# to ``none`` is what the method cannot tell apart from nothing.
DUET_ARMS = ("none", "control", "global", "route")
MODES = {"control": "none"}  # arm -> bench_server.py --mode, where they differ
# The global patch taken apart, side by side: the package installed with no
# fix selected, and uvicorn's on_response_complete behind a bare pass-through
# function (a call layer, no guard), on the release with the most fixes.
DECOMPOSE_ARMS = ("none", "control", "nofix", "passthrough", "global")
DECOMPOSE_RELEASE = "0.12.2"


def start_arms(py, http, loop, app, arms, **options):
    """A fresh server per arm: ({arm: Server}, {arm: why it did not start})."""
    launched = {arm: Server(py, http, loop, app, MODES.get(arm, arm), **options) for arm in arms}
    for server in launched.values():  # all at once: they start up in parallel
        server.launch()
    servers, unavailable = {}, {}
    for arm, server in launched.items():
        if server.ready():
            servers[arm] = server
        else:
            unavailable[arm] = server.error
    return servers, unavailable


def wrk_runs(servers, arms, depth, duration, connections, at_once):
    """One wrk run per server, one after another in ``arms`` order or all at once."""

    def one(arm):
        server = servers[arm]
        return wrk(server.port, depth, duration, connections, server_pid=server.proc.pid)

    if not at_once:
        return {arm: one(arm) for arm in arms}
    out, failed = {}, []

    def in_thread(arm):
        try:
            out[arm] = one(arm)
        except Exception as exc:  # re-raised below, in this thread
            failed.append(exc)

    threads = [threading.Thread(target=in_thread, args=(arm,)) for arm in arms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 120)  # wrk() itself gives up after duration + 60 s
    if failed or len(out) != len(arms):
        raise failed[0] if failed else RuntimeError("a wrk run did not finish")
    for data in out.values():  # other processes' share cannot be told apart from ours now
        data.pop("foreign_server_cpu", None)
        data.pop("foreign_client_cpu", None)
    return {arm: out[arm] for arm in arms}


def ab_session(py, http, loop, app, arms, loads, cfg, record_name, side_by_side=False):
    """Compare the arms over rounds, with fresh servers for every round.

    Each round starts its own server processes (and warms them up), runs
    every load on them and stops them: a server's own bias (hash seed,
    memory layout, where the kernel put its pages) belongs to one round
    only, so the median over rounds is not skewed by it.

    One arm at a time (the A/B pairs): wrk runs the arms in ABC or CBA
    order, to cancel drift.  ``side_by_side`` (the duet rounds): one wrk
    per arm, all at once, so that whatever else the machine does in those
    seconds hits every arm alike; the servers share the server CPU, and
    the order in which they start rotates from round to round.
    """
    by_load = {load: [] for load in loads}
    out = {"unavailable": {}, "info": {}, "loads": {}}
    rounds = cfg["duet_rounds"] if side_by_side else cfg["pairs"]
    for i in range(rounds):
        if side_by_side:
            arms_now = list(arms[i % len(arms) :]) + list(arms[: i % len(arms)])
        else:
            arms_now = list(arms) if i % 2 == 0 else list(reversed(arms))
        servers, unavailable = start_arms(py, http, loop, app, arms_now)
        try:
            out["unavailable"].update(unavailable)
            if "none" not in servers:
                if i == 0:
                    return {
                        "skipped": unavailable.get("none", "unguarded server did not start"),
                        "unavailable": unavailable,
                    }
                raise RuntimeError("unguarded server did not start: " + str(unavailable))
            order = [a for a in arms_now if a in servers]
            out["info"] = {a: servers[a].info for a in order}
            wrk_runs(servers, order, 1, cfg["warmup"], cfg["connections"], True)  # warm-up
            wait_quiet(cfg["quiet_wait"])
            for load in loads:
                for arm in order:
                    if servers[arm].proc.poll() is not None:
                        raise RuntimeError(
                            "{} server died: {}".format(arm, servers[arm].log_tail())
                        )
                runs = wrk_runs(
                    servers, order, LOADS[load], cfg["duration"], cfg["connections"], side_by_side
                )
                by_load[load].append(runs)
        finally:
            for server in servers.values():
                server.stop()
    for load in loads:
        pairs = by_load[load]
        measured = [a for a in arms if any(a in pair for pair in pairs)]
        out["loads"][load] = {"pairs": pairs, "summary": summarise_ab(pairs, measured)}
        s = out["loads"][load]["summary"]
        g = s.get("global", {}).get("rps_ratio") or {}
        p = s.get("global", {}).get("p99_ratio") or {}
        log(
            "  {} {} {} {} {}: none {:.0f} rps; global/none rps x{:.3f} p99 x{:.3f}{}".format(
                record_name,
                http,
                loop,
                app,
                load,
                s["none"]["rps_median"] or 0,
                g.get("median", float("nan")),
                p.get("median", float("nan")),
                "".join(
                    "; {}/none rps x{:.3f}".format(a, s[a]["rps_ratio"]["median"])
                    for a in measured
                    if a not in ("none", "global") and s.get(a, {}).get("rps_ratio")
                ),
            )
        )
    return out


def section_throughput(cfg, envinfo, results, section="throughput"):
    """The A/B pairs (``throughput``), the side-by-side rounds (``duet``), or
    those rounds with the global patch taken apart (``decompose``: keep-alive,
    hello, asyncio, on ``DECOMPOSE_RELEASE``)."""
    side_by_side = section != "throughput"
    arms = {"throughput": ARMS, "duet": DUET_ARMS, "decompose": DECOMPOSE_ARMS}[section]
    loads, loops, apps, releases = cfg["loads"], cfg["loops"], cfg["apps"], cfg["releases"]
    if section == "decompose":
        cfg = dict(cfg, duet_rounds=cfg["decompose_rounds"])
        loads, loops, apps = ("keepalive",), ("asyncio",), ("hello",)
        releases = [r for r in releases if r == DECOMPOSE_RELEASE]
    rows = results.setdefault(section, [])
    for release in releases:
        py = envinfo["envs"][release]["python"]
        for http in cfg["impls"]:
            for loop in loops:
                for app in apps:
                    log("{}: uvicorn {} {} {} {}".format(section, release, http, loop, app))
                    out = ab_session(
                        py, http, loop, app, arms, loads, cfg, release, side_by_side=side_by_side
                    )
                    out.update({"release": release, "http": http, "loop": loop, "app": app})
                    if out.get("skipped"):
                        log("  skipped: " + out["skipped"][:300])
                    rows.append(out)
                    save(results)


# The first release with the upstream fixes the guard applies to each release:
# its unguarded count is what the fixes cost upstream.
CG_REFERENCE = {"0.12.2": "0.12.3", "0.27.0": "0.27.1"}


def exact_requests(sock, count, depth, timeout=120):
    """Send ``count`` GET / on ``sock``, ``depth`` per write, and read every
    response (Content-Length framed) before the next write."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * depth
    deadline = time.monotonic() + timeout
    buf = b""
    for _ in range(count // depth):
        sock.sendall(request)
        for _ in range(depth):
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        buf = rest[length:]
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("responses did not arrive in {} s".format(timeout))
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("connection closed by the server")
                buf += data


def callgrind_events(path):
    """Every event of a callgrind dump's ``totals:`` line, by name (``Ir`` first)."""
    names = ["Ir"]
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("totals:"):
                return dict(zip(names, (int(v) for v in line.split()[1:])))
    raise RuntimeError("no totals in " + path)


def callgrind_totals(path):
    return callgrind_events(path)["Ir"]


# callgrind's cache and branch-predictor simulation (--cache-sim=yes --branch-sim=yes):
# deterministic like the instruction count, and it weighs what the count cannot see,
# memory traffic.  Estimated cycles by the published formula (Itamar Turner-Trauring,
# pythonspeed.com "consistent benchmarking in CI", as iai-callgrind uses it):
# L1 hits + 5 x last-level hits + 35 x RAM accesses.
CACHE_SIM = ["--cache-sim=yes", "--branch-sim=yes"]


def estimated_cycles(events):
    """Cycles estimated from one dump's cache simulation."""
    accesses = events["Ir"] + events["Dr"] + events["Dw"]
    l1_misses = events["I1mr"] + events["D1mr"] + events["D1mw"]
    ram = events["ILmr"] + events["DLmr"] + events["DLmw"]
    return (accesses - l1_misses) + 5 * (l1_misses - ram) + 35 * ram


def mispredicts(events):
    """Branches the simulated predictor got wrong (conditional + indirect)."""
    return events["Bcm"] + events["Bim"]


# Calls counted in each dump: CPython's object allocator entry points (every
# object allocation goes through one), and pymalloc's setting up of a fresh
# pool, which an unchanged allocation sequence can still need more or less
# often depending on what the heap held before (a static function: always 0
# where the build inlined it).
ALLOCATORS = ("PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc")
NEW_POOL = "allocate_from_new_pool"


def callgrind_calls(path, names):
    """Calls to each of ``names`` in a callgrind dump."""
    ids, counts = {}, dict.fromkeys(names, 0)
    callee = None
    with open(path) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                ref, _, name = line.split("=", 1)[1].strip().partition(" ")
                if name:
                    ids[ref] = name
                callee = ids.get(ref) if line.startswith("cfn=") else None
            elif line.startswith("calls=") and callee in names:
                counts[callee] += int(line[6:].split()[0])
    return counts


def dump_measures(path):
    """The per-dump totals the instructions section reports, by key."""
    events = callgrind_events(path)
    calls = callgrind_calls(path, ALLOCATORS + (NEW_POOL,))
    return {
        "ir_per_request": events["Ir"],
        "cycles_per_request": estimated_cycles(events),
        "mispredicts_per_request": mispredicts(events),
        "allocations_per_request": sum(calls[name] for name in ALLOCATORS),
        "new_pools_per_request": calls[NEW_POOL],
    }


def cache_config(path):
    """The cache geometry callgrind simulated (its ``desc:`` lines), for the record."""
    with open(path) as f:
        return [
            line.split(":", 1)[1].strip()
            for line in f
            if line.startswith("desc:") and " cache:" in line
        ]


def count_instructions(py, http, arm, cfg, seed=0, loop="asyncio"):
    """Instructions the server executes per request, counted by callgrind,
    with estimated cycles and branch mispredictions from its cache and branch
    simulation, and object allocations (``dump_measures``).

    The server runs under ``valgrind --tool=callgrind --instr-atstart=no``
    (and ``CACHE_SIM``) with the hash seed ``seed`` and the heap padding
    ``seed`` (``bench_server.pad_heap``) on ``loop``.  For each
    of ``LOADS`` in turn (one request at a time, then 16-deep pipelined
    batches, on one connection): 160 requests of that load warm up,
    uncounted; ``callgrind_control --instr=on``
    starts the count; exactly ``cg_requests`` requests are answered and
    dumped.  Instruction counts do not depend on what else the machine runs,
    but differ a little between processes of the same code (objects hashed by
    address land differently in asyncio's and uvicorn's sets, and the heap's
    state decides how often pymalloc sets up a fresh pool)."""
    out_file = WORK / "callgrind.{}.%p".format(arm)
    server = Server(
        py,
        http,
        loop,
        "hello",
        arm,
        keep_alive=120,  # callgrind_control takes seconds; the connection must outlive them
        wrapper=["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        + CACHE_SIM
        + ["--callgrind-out-file=" + str(out_file)],
        env={"PYTHONHASHSEED": str(seed)},
        extra=["--heap-pad", str(seed)],
    )
    if not server.start(timeout=180):
        return {"error": server.error}
    pid = str(server.proc.pid)
    dumps = str(out_file).replace("%p", pid)

    def control(*args):
        run(["callgrind_control"] + list(args) + [pid], timeout=120)

    try:
        # A second client, idle after one request, stays connected throughout:
        # its armed keep-alive timer is in the loop's heap on every arm, as on
        # a server with more than one client.  Without it the count depended
        # on the set-up's closed connections: unguarded, their timers (R5's
        # bug) stay in the heap and spare asyncio the pop of every cancelled
        # timer; guarded (R5) they are gone and each pop costs Python
        # comparisons (+1.7 % per request on 0.12.2 httptools, for no work
        # of the guard's).
        with socket.create_connection(
            ("127.0.0.1", server.port), timeout=120
        ) as idle, socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            exact_requests(idle, 1, 1)
            for load, depth in LOADS.items():
                # Warm-up with the same load, not counted: the state it leaves
                # (such as keep-alive timers still in the loop's heap) is that load's.
                exact_requests(sock, 160, depth)
                control("--instr=on")
                control("--zero")
                exact_requests(sock, cfg["cg_requests"], depth)
                control("--dump=" + load)
                control("--instr=off")
        out = {"simulated": cache_config("{}.1".format(dumps)), "info": server.info}
        for i, load in enumerate(LOADS, 1):  # callgrind numbers the dumps from 1
            for key, total in dump_measures("{}.{}".format(dumps, i)).items():
                out.setdefault(key, {})[load] = total / float(cfg["cg_requests"])
        return out
    finally:
        server.stop()
        for leftover in WORK.glob("callgrind.{}.{}*".format(arm, pid)):
            leftover.unlink()


def count_processes(py, http, arm, cfg, loop="asyncio"):
    """count_instructions in ``cg_processes`` servers, one after another, with
    hash seeds and heap paddings 0, 1, ... (the same seeds for every arm, so
    each arm's median samples hash orders and heap states, not one state the
    guard shifted):
    each ``*_per_request`` measure is their median per load, ``processes``
    each one's instruction counts
    and ``processes_cycles`` its estimated cycles."""
    runs = [
        count_instructions(py, http, arm, cfg, seed, loop) for seed in range(cfg["cg_processes"])
    ]
    done = [r for r in runs if "ir_per_request" in r]
    if not done:
        return {"error": runs[0].get("error")}
    out = {
        key: {load: statistics.median(r[key][load] for r in done) for load in done[0][key]}
        for key in done[0]
        if key.endswith("_per_request")
    }
    out.update(
        processes=[r["ir_per_request"] for r in done],
        processes_cycles=[r["cycles_per_request"] for r in done],
        errors=[r["error"] for r in runs if "error" in r],
        info=done[0]["info"],
        simulated=done[0]["simulated"],
        heap_padding=True,  # bench_server.py --heap-pad <seed>
    )
    return out


def section_instructions(cfg, envinfo, results):
    rows = results.setdefault("instructions", [])
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        rows.append({"skipped": "valgrind (callgrind) is not installed"})
        log("instructions: skipped, valgrind not installed")
        return
    for release in cfg["releases"]:
        py = envinfo["envs"][release]["python"]
        for http, loop in [(h, lp) for h in cfg["impls"] for lp in cfg["cg_loops"]]:
            row = {"release": release, "http": http, "loop": loop, "arms": {}}
            for arm in cfg["cg_arms"]:
                row["arms"][arm] = count_processes(py, http, arm, cfg, loop)
            reference = CG_REFERENCE.get(release)
            if cfg["cg_reference"] and reference in envinfo["envs"]:
                ref_py = envinfo["envs"][reference]["python"]
                row["reference"] = dict(
                    count_processes(ref_py, http, "none", cfg, loop), release=reference
                )
            base = row["arms"]["none"].get("ir_per_request")
            if base:
                row["ratios"] = {
                    arm: {load: v["ir_per_request"][load] / base[load] for load in base}
                    for arm, v in row["arms"].items()
                    if arm != "none" and v.get("ir_per_request")
                }
            rows.append(row)
            log(
                "instructions: uvicorn {} {} {}: {}".format(
                    release,
                    http,
                    loop,
                    "; ".join(
                        "{} {}".format(
                            arm,
                            " ".join("{} x{:.4f}".format(k, v) for k, v in r.items()),
                        )
                        for arm, r in (row.get("ratios") or {}).items()
                    )
                    or str({a: v.get("error") for a, v in row["arms"].items()})[:300],
                )
            )
            save(results)


def section_memory(cfg, envinfo, results):
    rows = results.setdefault("memory", [])
    n = cfg["mem_requests"]
    per_thread = int(math.ceil(n / float(cfg["connections"])))
    for release in cfg["releases"]:
        py = envinfo["envs"][release]["python"]
        for http in cfg["impls"]:
            log("memory: uvicorn {} {} asyncio hello, {} requests".format(release, http, n))
            pairs = []
            unavailable = {}
            for i in range(cfg["mem_pairs"]):
                servers, failed = start_arms(py, http, "asyncio", "hello", ARMS)
                unavailable.update(failed)
                try:
                    arms = [a for a in ARMS if a in servers]
                    if "none" not in arms:
                        break
                    order = arms if i % 2 == 0 else list(reversed(arms))
                    pair = {}
                    for arm in order:
                        server = servers[arm]
                        before = server.rss_kb()
                        load = wrk(server.port, 1, 600, cfg["connections"], stop_after=per_thread)
                        time.sleep(0.5)
                        after = server.rss_kb()
                        pair[arm] = {
                            "requests": load["requests"],
                            "rss_ready_kb": before["VmRSS"],
                            "rss_after_kb": after["VmRSS"],
                            "hwm_after_kb": after["VmHWM"],
                            "growth_kb": after["VmRSS"] - before["VmRSS"],
                            "errors": load["errors"],
                        }
                    pairs.append(pair)
                finally:
                    for server in servers.values():
                        server.stop()
            if not pairs:
                rows.append(
                    {
                        "release": release,
                        "http": http,
                        "skipped": unavailable.get("none", "no server started"),
                        "unavailable": unavailable,
                    }
                )
                log("  skipped: " + rows[-1]["skipped"][:300])
                save(results)
                continue
            summary = {}
            for arm in ARMS:
                if arm == "none" or not any(arm in p for p in pairs):
                    continue
                summary[arm] = {
                    "rss_after_ratio": ratio_summary(pairs, "rss_after_kb", arm),
                    "rss_ready_ratio": ratio_summary(pairs, "rss_ready_kb", arm),
                    "growth_delta_kb": statistics.median(
                        [p[arm]["growth_kb"] - p["none"]["growth_kb"] for p in pairs if arm in p]
                    ),
                }
            rows.append(
                {
                    "release": release,
                    "http": http,
                    "requests_target": n,
                    "pairs": pairs,
                    "summary": summary,
                    "unavailable": unavailable,
                }
            )
            g = summary.get("global", {}).get("rss_after_ratio") or {}
            log(
                "  RSS after: none {} kB; global/none x{:.4f}".format(
                    statistics.median([p["none"]["rss_after_kb"] for p in pairs]),
                    g.get("median", float("nan")),
                )
            )
            save(results)


def reset_connections(port, count, path, read_response, batch=50):
    """Open ``count`` connections (``batch`` at a time), send GET ``path``,
    optionally read the response, then reset them (SO_LINGER 0, close)."""
    request = "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".format(path).encode()
    linger = struct.pack("ii", 1, 0)
    failures = 0
    for start in range(0, count, batch):
        socks = []
        for _ in range(min(batch, count - start)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            socks.append(sock)
        if read_response:
            for sock in socks:
                data = b""
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    head, sep, body = data.partition(b"\r\n\r\n")
                    if sep:
                        length = 0
                        for line in head.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":")[1])
                        if len(body) >= length:
                            break
                else:
                    failures += 1
        else:
            time.sleep(0.01)  # the server reads the request and starts the app
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.close()
    return failures


def live_objects(port):
    counts = json.loads(http_get(port, "/_objects"))
    protocols = sum(v for k, v in counts.items() if k.endswith("Protocol"))
    cycles = sum(v for k, v in counts.items() if k.endswith("RequestResponseCycle"))
    timers = sum(v for k, v in counts.items() if k.endswith("TimerHandle"))
    return {
        "protocols": protocols,
        "cycles": cycles,
        "timers": timers,
        "closed_protocols": counts.pop("_closed_protocols", None),
        "raw": counts,
    }


def section_retention(cfg, envinfo, results):
    rows = results.setdefault("retention", [])
    n = cfg["ret_connections"]
    keep_alive = cfg["ret_keepalive"]
    scenarios = (("after-response", "/", True), ("mid-request", "/_slow", False))
    for release in cfg["releases"]:
        py = envinfo["envs"][release]["python"]
        for http in cfg["impls"]:
            log(
                "retention: uvicorn {} {} asyncio, {} resets, timeout_keep_alive {} s".format(
                    release, http, n, keep_alive
                )
            )
            servers, unavailable = start_arms(
                py, http, "asyncio", "hello", ARMS, keep_alive=keep_alive
            )
            try:
                arms = [a for a in ARMS if a in servers]
                if "none" not in arms:
                    rows.append(
                        {
                            "release": release,
                            "http": http,
                            "skipped": unavailable.get("none", "no server started"),
                            "unavailable": unavailable,
                        }
                    )
                    log("  skipped: " + rows[-1]["skipped"][:300])
                    continue
                # Let the start-up probes' connections expire (uvicorn < 0.18.3 keeps even
                # cleanly closed ones until their keep-alive timer fires).
                time.sleep(keep_alive + 1)
                data = {a: {"baseline": live_objects(servers[a].port)} for a in arms}
                for name, path, read in scenarios:
                    last_reset = time.monotonic()
                    for arm in arms:
                        port = servers[arm].port
                        t0 = time.monotonic()
                        data[arm][name] = {"read_failures": reset_connections(port, n, path, read)}
                        last_reset = time.monotonic()
                        data[arm][name]["reset_seconds"] = last_reset - t0
                        time.sleep(0.5)  # connection_lost has run; /_slow handlers are done
                        data[arm][name]["just_after"] = live_objects(port)
                    time.sleep(max(0.0, last_reset + keep_alive + 2 - time.monotonic()))
                    for arm in arms:
                        data[arm][name]["after_wait"] = live_objects(servers[arm].port)
            finally:
                for server in servers.values():
                    server.stop()
            summary = {}
            for arm in arms:
                base = data[arm]["baseline"]
                summary[arm] = {}
                for name, _, _ in scenarios:
                    d = data[arm][name]
                    summary[arm][name] = {
                        when: {
                            "protocols": d[when]["protocols"] - base["protocols"],
                            "cycles": d[when]["cycles"] - base["cycles"],
                            "closed_protocols": d[when]["closed_protocols"],
                        }
                        for when in ("just_after", "after_wait")
                    }
            rows.append(
                {
                    "release": release,
                    "http": http,
                    "connections": n,
                    "timeout_keep_alive": keep_alive,
                    "data": data,
                    "summary": summary,
                    "unavailable": unavailable,
                }
            )
            log(
                "  "
                + "; ".join(
                    "{} {}: {} -> {}".format(
                        arm, name, s[name]["just_after"], s[name]["after_wait"]
                    )
                    for arm, s in summary.items()
                    for name in s
                )
            )
            save(results)


def section_activation(cfg, envinfo, results):
    rows = results.setdefault("activation", [])
    modes = ("loaded-none", "loaded-guard", "deferred-none", "deferred-guard", "breakdown")
    for release in cfg["releases"]:
        py = envinfo["envs"][release]["python"]
        log("activation: uvicorn {}, {} runs per mode".format(release, cfg["act_runs"]))
        samples = {m: [] for m in modes}
        applied = None
        for i in range(cfg["act_runs"] + 2):
            if i % 10 == 0:
                wait_quiet(cfg["quiet_wait"])
            order = modes if i % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                out = run([py, str(HERE / "activation.py"), mode], 120, env=clean_env())
                data = json.loads(out.stdout.strip().splitlines()[-1])
                if data["applied"] is not None:
                    applied = data["applied"]
                if i >= 2:  # the first two rounds write bytecode caches
                    samples[mode].append(data)

        def med(mode, key):
            return statistics.median([s[key] for s in samples[mode]])

        summary = {
            "loaded_guard_ms": med("loaded-guard", "guard_ms"),
            "deferred_guard_import_ms": med("deferred-guard", "guard_ms"),
            "deferred_protocols_extra_ms": med("deferred-guard", "import_protocols_after_ms")
            - med("deferred-none", "import_protocols_after_ms"),
            "import_uvicorn_ms": med("loaded-none", "import_uvicorn_ms"),
            "import_protocols_ms": med("loaded-none", "import_protocols_before_ms"),
        }
        for key in ("import_ms", "install_ms"):
            summary["breakdown_" + key] = med("breakdown", key)
        summary["breakdown_new_foreign_modules"] = samples["breakdown"][-1]["new_foreign_modules"]
        summary["deferred_total_ms"] = (
            summary["deferred_guard_import_ms"] + summary["deferred_protocols_extra_ms"]
        )
        summary["p90_loaded_guard_ms"] = sorted(s["guard_ms"] for s in samples["loaded-guard"])[
            int(0.9 * (len(samples["loaded-guard"]) - 1))
        ]
        rows.append(
            {
                "release": release,
                "runs": cfg["act_runs"],
                "applied": applied,
                "summary": summary,
                "samples": samples,
            }
        )
        log(
            "  loaded: {:.2f} ms; deferred: {:.2f} ms import + {:.2f} ms at protocol import".format(
                summary["loaded_guard_ms"],
                summary["deferred_guard_import_ms"],
                summary["deferred_protocols_extra_ms"],
            )
        )
        save(results)


HOOK_IMPORTS = "import asyncio, concurrent.futures, email.parser, http.client, json, logging"

FIRST_EXEC = r"""
import sys, time  # both loaded by every start-up anyway; nothing else before the timing
for name in ["os"] + {preload!r}:
    if name not in sys.modules:
        try:
            __import__(name)
        except Exception:
            pass
sys.path.append({site!r})
with open({pth!r}) as f:
    line = [l for l in f.read().splitlines() if l.startswith(("import ", "import\t"))][0]
before = set(sys.modules)
t0 = time.perf_counter()
exec(line)
t1 = time.perf_counter()
sys.stdout.write(repr({{"us": (t1 - t0) * 1e6,
                       "new_modules": sorted(set(sys.modules) - before),
                       "meta_path": [type(f).__module__ + "." + type(f).__name__
                                     for f in sys.meta_path]}}))
"""


def timed_run(cmd, env, limit=60):
    """Wall time (ms) of one process.  Not subprocess.run(timeout=...): its wait
    polls with growing sleeps, which quantises short runs; a watchdog thread
    kills the child after ``limit`` seconds instead."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    try:
        proc.wait()
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - t0) * 1e3
    if proc.returncode != 0:
        raise RuntimeError("{} exited with {}".format(cmd, proc.returncode))
    return elapsed


def interleaved(cmds, runs, env, warm=10):
    times = {name: [] for name in cmds}
    names = list(cmds)
    for i in range(runs + warm):
        for name in names if i % 2 == 0 else list(reversed(names)):
            elapsed = timed_run(cmds[name], env)
            if i >= warm:
                times[name].append(elapsed)
    return times


def _paired(times, arm="with", base="without"):
    """``arm`` against ``base``, from interleaved runs: medians and the
    median of the run-by-run differences."""
    diffs = [w - o for w, o in zip(times[arm], times[base])]
    return {
        "without_median_ms": statistics.median(times[base]),
        "with_median_ms": statistics.median(times[arm]),
        "diff_of_medians_ms": statistics.median(times[arm]) - statistics.median(times[base]),
        "median_paired_diff_ms": statistics.median(diffs),
    }


def section_hook(cfg, envinfo, results, python):
    hooks = COMPARED_HOOKS if cfg["hook_compared"] else {}
    log(
        "start-up hook: {} environments, {} runs each".format(
            2 * (2 + len(hooks)), cfg["hook_runs"]
        )
    )
    built = build_hook_envs(python, envinfo["wheel"], hooks)
    env = clean_env()
    runs = cfg["hook_runs"]
    py = built["venv"]
    arms = dict(py, **{"system-" + arm: built["system"][arm] for arm in ("without", "with")})
    bare = interleaved({k: [v, "-c", "pass"] for k, v in arms.items()}, runs, env)
    imports = interleaved(
        {k: [py[k], "-c", HOOK_IMPORTS] for k in ("without", "with")}, runs // 2, env
    )
    # The hook's own work in a fresh process, first time: python -S (no site, so the
    # .pth has not run), site-packages appended to sys.path, then exec(line) as
    # site.addpackage does, timed once per process.
    site = str(Path(built["pth"]).parent)
    preload = [
        name
        for name in json.loads(
            run(
                [py["without"], "-c", "import sys; sys.stdout.write(repr(list(sys.modules)))"],
                60,
                env=env,
            )
            .stdout.strip()
            .replace("'", '"')
        )
        if name not in ("__main__", "site", "sitecustomize", "usercustomize")
        and not name.startswith("_distutils")
    ]  # in import order
    first = []
    detail = None
    for _ in range(max(10, runs // 3)):
        out = run(
            [
                py["with"],
                "-S",
                "-c",
                FIRST_EXEC.format(site=site, pth=built["pth"], preload=preload),
            ],
            60,
            env=env,
        )
        detail = ast.literal_eval(out.stdout.strip().splitlines()[-1])
        first.append(detail["us"])
    counts = {layout: startup_instructions(built[layout], env) for layout in ("venv", "system")}
    by_python = {"venv": {}, "system": {}}
    if cfg["hook_pythons"] and shutil.which("valgrind"):
        for minor, interp in interpreters.find_interpreters().items():
            log("  instructions of -c pass on Python {}".format(minor))
            there = build_hook_envs(interp, envinfo["wheel"], hooks, "py" + minor)
            for layout, counted in by_python.items():
                counted[minor] = startup_instructions(there[layout], env)
                counted[minor]["present"] = there["present"][layout]
    summary = dict(_paired(bare))
    summary["system"] = _paired(bare, "system-with", "system-without")
    for name, hook in hooks.items():
        summary[name] = dict(
            _paired(bare, name),
            pth=hook["files"][0][1].strip(),
            label=hook["label"],
            stands_for=hook["stands_for"],
            instructions=_added(counts["venv"], name),
            instructions_system=_added(counts["system"], name),
        )
    summary["compared"] = list(hooks)
    summary["instructions"] = counts["venv"]
    summary["instructions_system"] = counts["system"]
    summary["instructions_by_python"] = by_python["venv"]
    summary["instructions_by_python_system"] = by_python["system"]
    summary["imports"] = _paired(imports)
    summary["imports_command"] = HOOK_IMPORTS
    summary["pth_first_exec_us"] = statistics.median(first)
    summary["pth_first_exec_new_modules"] = detail["new_modules"] if detail else None
    summary["meta_path_after"] = detail["meta_path"] if detail else None
    results["hook"] = {
        "runs": runs,
        "envs": built,
        "summary": summary,
        "samples": {"pass": bare, "imports": imports, "first_exec_us": first},
    }
    log(
        "  python -c pass: without {:.2f} ms, with {:.2f} ms (paired diff {:+.3f} ms; outside "
        "a venv {:+.3f} ms; {}); .pth line, first exec {:.0f} us, imports {}".format(
            summary["without_median_ms"],
            summary["with_median_ms"],
            summary["median_paired_diff_ms"],
            summary["system"]["median_paired_diff_ms"],
            "; ".join(
                "{} {:+.3f} ms".format(hook["label"], summary[name]["median_paired_diff_ms"])
                for name, hook in hooks.items()
            ),
            summary["pth_first_exec_us"],
            ", ".join(summary["pth_first_exec_new_modules"] or []),
        )
    )
    save(results)


def _added(counts, arm):
    """What ``arm`` adds to ``without``'s instruction count (None without valgrind)."""
    return counts and counts[arm] - counts["without"]


def startup_instructions(py, env):
    """Instructions of ``python -c pass`` (start-up to exit) in each environment, by
    callgrind with a fixed hash seed: the same count on every run, so the
    hook's cost shows without the spawn-time noise.  None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    counts = {}
    for name, python in py.items():
        out_file = WORK / "callgrind.hook.{}".format(name)
        run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + str(out_file)]
            + [python, "-c", "pass"],
            timeout=300,
            env=dict(env, PYTHONHASHSEED="0"),
        )
        counts[name] = callgrind_totals(str(out_file))
        out_file.unlink()
    counts["difference"] = counts["with"] - counts["without"]
    return counts


def section_micro(cfg, envinfo, results):
    rows = results.setdefault("micro", [])
    for release in cfg["releases"]:
        py = envinfo["envs"][release]["python"]
        for http in cfg["impls"]:
            wait_quiet(cfg["quiet_wait"])
            out = run(
                pin(SERVER_CPU)
                + [
                    py,
                    str(HERE / "micro.py"),
                    "--http",
                    http,
                    "--rounds",
                    str(cfg["micro_rounds"]),
                    "--number",
                    str(cfg["micro_number"]),
                    "--requests",
                    str(cfg["micro_requests"]),
                ],
                900,
                env=clean_env(),
            )
            data = json.loads(out.stdout.strip().splitlines()[-1])
            data["release"] = release
            rows.append(data)
            ns = data["ns"]
            log(
                "micro: uvicorn {} {} {}: request {:.1f} -> {:.1f} us; cycle= {:.0f} -> {:.0f} ns; "
                "on_response_complete {:.0f} -> {:.0f} ns; attr r/w x8 {:.0f} -> {:.0f} ns".format(
                    release,
                    http,
                    ",".join(data["applied"]) or "-",
                    ns["none"]["request"]["median"] / 1e3,
                    ns["global"]["request"]["median"] / 1e3,
                    ns["none"]["assign_cycle"]["median"],
                    ns["global"]["assign_cycle"]["median"],
                    ns["none"]["orc_keepalive"]["median"],
                    ns["global"]["orc_keepalive"]["median"],
                    ns["none"]["attr_rw"]["median"],
                    ns["global"]["attr_rw"]["median"],
                )
            )
            save(results)


# ---------------------------------------------------------------------------
# results


RESULTS_PATH = None
DOCS_PAGE = HERE.parent.parent / "docs" / "benchmarks.md"  # the rendering of results.json


def save(results):
    results["meta"]["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
    tmp = RESULTS_PATH.with_suffix(".json.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    os.replace(str(tmp), str(RESULTS_PATH))


def machine():
    info = {
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python_orchestrator": sys.version.split()[0],
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = run(["wrk", "--version"], 30, check=False).stdout
        info["wrk"] = out.strip().splitlines()[0]
    except Exception:
        pass
    info["taskset"] = TASKSET
    try:  # which boot: each is a fresh virtual machine here, with the same description
        with open("/proc/sys/kernel/random/boot_id") as f:
            info["boot_id"] = f.read().strip()
    except OSError:
        pass
    info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    return info


def git_state():
    try:
        head = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], 30).stdout.strip()
        dirty = run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "keepalive_guard"], 30
        ).stdout.strip()
        return {"head": head, "package_dirty": bool(dirty), "dirty_files": dirty.splitlines()}
    except Exception as exc:
        return {"error": str(exc)}


def run_section(section, cfg, envinfo, results, args):
    if section in ("throughput", "duet", "decompose"):
        section_throughput(cfg, envinfo, results, section)
    elif section == "instructions":
        section_instructions(cfg, envinfo, results)
    elif section == "memory":
        section_memory(cfg, envinfo, results)
    elif section == "retention":
        section_retention(cfg, envinfo, results)
    elif section == "activation":
        section_activation(cfg, envinfo, results)
    elif section == "hook":
        section_hook(cfg, envinfo, results, args.python)
    elif section == "micro":
        section_micro(cfg, envinfo, results)


def main(argv=None):
    global RESULTS_PATH
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 3 minutes")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument("--releases", help="comma-separated uvicorn releases")
    parser.add_argument("--impls", help="comma-separated: h11, httptools (default both)")
    parser.add_argument(
        "--python",
        default="3.11",
        help="interpreter for every environment (3.X or a path; default 3.11, "
        "the oldest that serves all three releases is 3.10)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config entry for this run, e.g. cg_loops=asyncio, cg_processes=3, "
        "cg_reference=0 (comma-separated for tuples); recorded in the results' config",
    )
    parser.add_argument("--pairs", type=int, help="A/B pairs per throughput case")
    parser.add_argument("--duration", type=int, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, help="results.json path (RESULTS.md beside it)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="with --only: start a new results file instead of replacing those sections "
        "in the existing one",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the markdown from the existing JSON"
    )
    args = parser.parse_args(argv)

    import report  # tests/bench/report.py

    default_name = "results-quick.json" if args.quick else "results.json"
    RESULTS_PATH = (args.out or HERE / default_name).resolve()
    md_path = RESULTS_PATH.with_name(
        RESULTS_PATH.name.replace("results", "RESULTS").replace(".json", ".md")
    )
    if RESULTS_PATH == (HERE / "results.json").resolve():  # the committed results
        md_path = DOCS_PAGE
    if args.render:
        results = json.loads(RESULTS_PATH.read_text())
        md_path.write_text(report.render(results, TARGETS, RESULTS_PATH.name))
        print(md_path)
        return 0

    cfg = dict(QUICK if args.quick else FULL)
    if args.releases:
        cfg["releases"] = tuple(r.strip() for r in args.releases.split(",") if r.strip())
    if args.impls:
        cfg["impls"] = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    if args.pairs:
        cfg["pairs"] = args.pairs
    if args.duration:
        cfg["duration"] = args.duration
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in cfg:
            parser.error("--set {}: no such config entry ({})".format(key, ", ".join(cfg)))
        old = cfg[key]
        if isinstance(old, tuple):
            cfg[key] = tuple(v.strip() for v in value.split(",") if v.strip())
        elif isinstance(old, bool):
            cfg[key] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            cfg[key] = type(old)(value)
    sections = args.only or list(SECTIONS)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    QUIET_BUDGET["left"] = cfg["quiet_budget"]
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        ensure_wrk()
        wanted = set(cfg["releases"])
        if "instructions" in sections and cfg["cg_reference"]:
            wanted.update(CG_REFERENCE[r] for r in cfg["releases"] if r in CG_REFERENCE)
        all_releases = tuple(sorted(wanted, key=lambda r: tuple(int(x) for x in r.split("."))))
        envinfo = build_environments(all_releases, args.python)
        results = {
            "meta": {
                "command": "python3 tests/bench/run.py"
                + (" " + " ".join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ""),
                "quick": args.quick,
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "machine": machine(),
                "git": git_state(),
                "config": {k: v for k, v in cfg.items()},
                "sections": sections,
                "envs": envinfo,
                "server_cpu": SERVER_CPU if TASKSET else None,
                "client_cpu": CLIENT_CPU if TASKSET else None,
                "example_commands": {
                    "server": " ".join(
                        Server(
                            envinfo["envs"][all_releases[0]]["python"],
                            "h11",
                            "asyncio",
                            "hello",
                            "global",
                        ).cmd()
                    ),
                    "wrk_keepalive": " ".join(
                        wrk_argv("PORT", 1, cfg["duration"], cfg["connections"], 0, LUA_SHOWN)
                    ),
                    "wrk_pipeline16": " ".join(
                        wrk_argv("PORT", 16, cfg["duration"], cfg["connections"], 0, LUA_SHOWN)
                    ),
                },
            },
            "targets": TARGETS,
        }
        if args.only and not args.fresh and RESULTS_PATH.exists():
            # Re-run some sections into the existing results: keep the rest, say so.
            previous = json.loads(RESULTS_PATH.read_text())
            for section in sections:
                previous.pop(section, None)
            previous.pop("errors", None)
            previous["meta"].setdefault("reruns", []).append(
                {
                    "sections": sections,
                    "command": results["meta"]["command"],
                    "started": results["meta"]["started"],
                    "git": results["meta"]["git"],
                    "wheel_sha256": envinfo["wheel_sha256"],
                    "envs": envinfo,
                    "config": cfg,
                    "machine": results["meta"]["machine"],
                    "loadavg_start": results["meta"]["machine"]["loadavg_start"],
                }
            )
            results = previous
        save(results)
        for section in SECTIONS:
            if section not in sections:
                continue
            t0 = time.monotonic()
            try:
                run_section(section, cfg, envinfo, results, args)
            except Exception as exc:  # record, go on with the other sections
                import traceback

                results.setdefault("errors", []).append(
                    {"section": section, "error": traceback.format_exc()[-3000:]}
                )
                log("section {} failed: {!r}".format(section, exc))
            results["meta"].setdefault("section_seconds", {})[section] = round(
                time.monotonic() - t0, 1
            )
            save(results)
        loadavg = open("/proc/loadavg").read().split()[:3]
        if results["meta"].get("reruns") and args.only and not args.fresh:
            results["meta"]["reruns"][-1]["loadavg_end"] = loadavg
            results["meta"]["reruns"][-1]["seconds"] = round(time.monotonic() - started, 1)
        else:
            results["meta"]["machine"]["loadavg_end"] = loadavg
            results["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
        waits = {
            "waited_seconds": round(QUIET_BUDGET["waited"], 1),
            "gave_up": QUIET_BUDGET["gave_up"],
        }
        if results["meta"].get("reruns") and args.only and not args.fresh:
            results["meta"]["reruns"][-1]["quiet_wait"] = waits
        else:
            results["meta"]["quiet_wait"] = waits
        save(results)
        md_path.write_text(report.render(results, TARGETS, RESULTS_PATH.name))
        log("wrote {} and {} ({:.0f} s)".format(md_path, RESULTS_PATH, time.monotonic() - started))
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
