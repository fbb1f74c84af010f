"""Machinery for test_routes.py: real commands as servers, probes, gunicorn workers.

Python 3.6-compatible and free of pytest, because gunicorn's master imports the
worker classes below (``-k routes_support.GuardedUvicornWorkerAsyncio`` with
``--pythonpath`` pointing here).  Every wait is bounded; every process started
here is stopped by its own PID / process group (it is started in a session of
its own), never by name.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from keepalive_guard.verify.client import Client, get

START_TIMEOUT = 60.0  # two cores shared with other suites: be generous
INTERRUPT_TIMEOUT = 3.0  # SIGINT to the PID alone: enough for every server that handles it
STOP_TIMEOUT = 8.0  # then SIGINT to the group (uvicorn < 0.13's supervisors need it)
PORT_ATTEMPTS = 3


def free_port():
    """A port that was free on 127.0.0.1 a moment ago (bind to 0, read it, close)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


class Process(object):
    """A command in its own session; stopped by PID, then by process group.

    Exit is observed with ``waitid(WNOWAIT)``: the leader stays a zombie (so
    its PID, which is the group's id, cannot be reused) until every straggler
    of its group has been killed; only then is it reaped.
    """

    def __init__(self, argv, env=None, cwd=None, stdout=None):
        self.argv = list(argv)
        self._err = tempfile.TemporaryFile(mode="w+b")
        self._out = stdout if stdout is not None else tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.returncode = None
        self._reaped = False

    def exited(self):
        """True once the leader has exited (not reaped: the group id stays reserved)."""
        if self._reaped:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None and info.si_pid == self.pid

    def wait_exited(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def signal(self, signum):
        if not self.exited():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def _killpg(self, signum):
        if self._reaped:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGINT to the PID; then SIGINT to the group (Ctrl+C); then SIGKILL to the group.

        Returns the leader's exit status.  Stragglers of the group are killed
        in every case.
        """
        if not self._reaped:
            self.signal(signal.SIGINT)
            if not self.wait_exited(INTERRUPT_TIMEOUT):
                # e.g. uvicorn 0.11's reloader joins its child, which only a
                # terminal's Ctrl+C (the whole group) would have interrupted
                self._killpg(signal.SIGINT)
                if not self.wait_exited(timeout):
                    self._killpg(signal.SIGKILL)
                    self.wait_exited(10.0)
            self._killpg(signal.SIGKILL)  # leftovers; the leader is a zombie here
            self.returncode = self.proc.wait(timeout=10.0)
            self._reaped = True
        return self.returncode

    def wait(self, timeout):
        """Wait for the leader to exit by itself (bounded), then clean up; its status or None."""
        if not self.wait_exited(timeout):
            self.stop()
            return None
        return self.stop()

    def _read(self, handle):
        handle.flush()
        handle.seek(0)
        return handle.read().decode("utf-8", "replace")

    def stderr(self):
        return self._read(self._err)

    def stdout(self):
        return self._read(self._out)


class CommandServer(object):
    """An arbitrary server command on a free 127.0.0.1 port.

    ``argv_for_port(port)`` builds the command line.  Started in its own
    session, ready once the port accepts connections (bounded), stopped by PID;
    its stderr is kept (``log()``) for the scenarios that count log lines.
    """

    def __init__(self, argv_for_port, env=None, cwd=None, name=None):
        self.argv_for_port = argv_for_port
        self.env = env
        self.cwd = cwd
        self.name = name
        self.port = None
        self.process = None

    @property
    def pid(self):
        return self.process.pid

    def start(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.process = Process(self.argv_for_port(self.port), env=self.env, cwd=self.cwd)
            while time.monotonic() < deadline:
                if _port_open(self.port):
                    if self.process.exited():  # someone else's server on that port
                        break
                    return self
                if self.process.exited():
                    break
                time.sleep(0.1)
            self.process.stop()
            log = self.log()
            if "in use" in log and attempt + 1 < PORT_ATTEMPTS:
                continue  # lost the race for the port: take another
            raise RuntimeError(
                "{} did not start (exit {}), command {}\nstderr:\n{}\nstdout:\n{}".format(
                    self.name, self.process.returncode, self.process.argv, log, self.stdout()
                )
            )
        raise AssertionError("not reached")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self):
        return self.process.stop() if self.process is not None else None

    def log(self):
        return self.process.stderr()

    def stdout(self):
        return self.process.stdout()

    def client(self, timeout=5.0):
        return Client(self.port, timeout)


def run_command(argv, env=None, cwd=None, timeout=60.0):
    """Run a command to completion (bounded): (exit status or None on timeout, stdout, stderr)."""
    process = Process(argv, env=env, cwd=cwd)
    status = process.wait(timeout)
    return status, process.stdout(), process.stderr()


def read_line(stream, prefix, timeout):
    """The first line of a pipe starting with ``prefix`` (bounded), and all text read."""
    fd, data = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.startswith(prefix):
                return line, data.decode("utf-8", "replace")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return None, data.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# probes over real sockets


def guard_state(server, timeout=15.0):
    """GET /_guard on a fresh connection: the serving process's PID and patch state."""
    with server.client(timeout=timeout) as client:
        client.send(get("/_guard"))
        response = client.read_response(timeout=timeout)
    if response is None or response.status != 200:
        return None
    return json.loads(response.body.decode())


def collect_guard_states(server, want, timeout=45.0, exclude=()):
    """/_guard from fresh connections until ``want`` distinct PIDs answered (bounded).

    Connections go in small concurrent batches so that every worker sharing
    the listening socket gets a chance to accept.
    """
    states = {}
    deadline = time.monotonic() + timeout

    def one(_):
        try:
            return guard_state(server, timeout=min(15.0, max(1.0, deadline - time.monotonic())))
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(states) < want and time.monotonic() < deadline:
            for state in pool.map(one, range(4)):
                if state is not None and state["pid"] not in exclude:
                    states.setdefault(state["pid"], state)
            if len(states) < want:
                time.sleep(0.1)
    return states


def keepalive_close_seconds(server, below=1.95, connections=3, attempts=3, timeout=8.0):
    """Seconds from sending one request until the server closes the idle connection.

    The server cannot answer before the request is sent, and arms its
    keep-alive timer only after answering: the result is never below the
    keep-alive timeout, whatever the load (a client measuring from the moment
    it read the response could be late and see less).  Load only adds, so
    the minimum over a few connections is taken, and while it is not
    ``below`` another batch is measured, up to ``attempts``.
    """

    def one(_):
        try:
            with server.client(timeout=10.0) as client:
                start = time.monotonic()
                client.send(get("/"))
                if client.read_response(timeout=10.0) is None:
                    return None
                if client.wait_closed(timeout) is None:
                    return None
                return time.monotonic() - start
        except OSError:
            return None

    best = None
    with ThreadPoolExecutor(max_workers=connections) as pool:
        for _ in range(attempts):
            times = [t for t in pool.map(one, range(connections)) if t is not None]
            if times:
                best = min(times + ([best] if best is not None else []))
            if best is not None and best < below:
                break
    return best


def environ_of(pid, name):
    """``name`` in a running process's environment (Linux /proc), or None if unset or unknown."""
    try:
        with open("/proc/{}/environ".format(pid), "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key.decode("utf-8", "replace") == name:
            return value.decode("utf-8", "replace")
    return None


def _note_environ(states, name="KEEPALIVE_GUARD"):
    for pid, state in states.items():
        state["environ"] = environ_of(pid, name)


def touch_later(path, seconds=5.0):
    """Rewrite ``path`` with an mtime in the future, so any stat-based reloader notices."""
    with open(path, "a") as handle:
        handle.write("# touched\n")
    later = time.time() + seconds
    os.utime(path, (later, later))


def probe(server, scenario=None, runs=5, want_pids=1, reload_file=None):
    """Everything the route tests assert on, gathered from one running server.

    Returns a dict: ``states`` (PID -> /_guard), ``keepalive`` (seconds),
    ``count`` (connections that showed ``scenario``'s bug, or None), and with
    ``reload_file`` the same for the child that serves after a reload:
    ``reloaded_states``, ``reloaded_count``.  Never raises: ``error`` holds a
    traceback instead.
    """
    result = {"states": {}, "keepalive": None, "count": None, "error": None, "runs": runs}
    try:
        result["states"] = collect_guard_states(server, want_pids)
        _note_environ(result["states"])  # while the processes are alive
        with ThreadPoolExecutor(max_workers=1) as pool:
            keepalive = pool.submit(keepalive_close_seconds, server)
            if scenario is not None:
                result["count"] = scenario.count(server, runs=runs)
            result["keepalive"] = keepalive.result(timeout=60)
        if reload_file is not None:
            old = set(result["states"])
            touch_later(reload_file)
            result["reloaded_states"] = collect_guard_states(server, 1, timeout=60.0, exclude=old)
            _note_environ(result["reloaded_states"])
            if result["reloaded_states"] and scenario is not None:
                result["reloaded_count"] = scenario.count(server, runs=runs)
    except Exception:
        result["error"] = traceback.format_exc()
    return result


def run_probes(specs):
    """Start and probe several independent servers at once.

    ``specs``: {key: (make_server, probe_kwargs)}; ``make_server()`` returns an
    unstarted context manager (CommandServer or harness.Server).  Returns
    {key: result} where result is ``probe``'s dict plus ``pid`` and ``log``.
    """

    def run(item):
        key, (make_server, kwargs) = item
        server = make_server()
        try:
            with server:
                result = probe(server, **kwargs)
                result["pid"] = server.pid if hasattr(server, "pid") else server.proc.pid
                result["port"] = server.port
                result["guard"] = getattr(server, "guard", None)
                result["log"] = server.log()
                result["stdout"] = server.stdout() if hasattr(server, "stdout") else ""
        except Exception:
            result = {"error": traceback.format_exc(), "log": "", "stdout": "", "states": {}}
            try:
                result["log"] = server.log()
            except Exception:
                pass
        return key, result

    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        return dict(pool.map(run, sorted(specs.items())))


# ---------------------------------------------------------------------------
# gunicorn worker classes, for releases whose UvicornWorker asks for uvloop
# (uvicorn 0.11.x-0.12.x: CONFIG_KWARGS loop="uvloop") where uvloop is not
# installed.  Everything but the loop is the class under test.


def loop_usable(loop):
    if loop != "uvloop":
        return True
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def worker_setting(cls, name):
    """A uvicorn worker class's ``loop`` or ``http`` ("auto", "h11", "httptools"):
    from CONFIG_KWARGS (0.4.0+), else from its class attributes (0.2.0-0.3.32)."""
    if hasattr(cls, "CONFIG_KWARGS"):
        return cls.CONFIG_KWARGS.get(name, "auto")
    if name == "loop":
        return cls.loop
    return "h11" if "H11" in cls.protocol_class.__name__ else "httptools"


def _with_asyncio(cls, name):
    if hasattr(cls, "CONFIG_KWARGS"):
        asyncio_loop = {"CONFIG_KWARGS": dict(cls.CONFIG_KWARGS, loop="asyncio")}
    else:  # 0.2.0-0.3.32: the loop is a class attribute of the worker
        asyncio_loop = {"loop": "asyncio"}
    return type(name, (cls,), dict(asyncio_loop, __module__=__name__))


try:
    from keepalive_guard import workers as _guarded_workers
except ImportError:  # gunicorn missing: the gunicorn tests say so
    _guarded_workers = None
else:
    GuardedUvicornWorkerAsyncio = _with_asyncio(
        _guarded_workers.UvicornWorker, "GuardedUvicornWorkerAsyncio"
    )
    BaseUvicornWorkerAsyncio = _with_asyncio(
        _guarded_workers.UvicornWorker.__mro__[1], "BaseUvicornWorkerAsyncio"
    )


def worker_path(cls):
    return "{}.{}".format(cls.__module__, cls.__name__)


def python_script(name):
    """A console script of this environment (next to its python), or None."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else None
