"""A uvicorn server of the installed release, in a subprocess on 127.0.0.1.

Started as ``python -m keepalive_guard.verify.serve``, stopped by its PID;
its log (stderr) is kept for assertions on tracebacks.  Every wait is bounded.
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from .client import Client

START_TIMEOUT = 30.0


class Server(object):
    """A uvicorn server of the installed release, in its own process."""

    def __init__(
        self, http="h11", guard="none", timeout_keep_alive=1.0, ws="none", env=None, loop="asyncio"
    ):
        self.args = [
            sys.executable,
            "-m",
            "keepalive_guard.verify.serve",
            "--http",
            http,
            "--guard",
            guard,
            "--ws",
            ws,
            "--timeout-keep-alive",
            str(timeout_keep_alive),
            "--loop",
            loop,
        ]
        self.env = dict(os.environ)
        self.env.pop("KEEPALIVE_GUARD", None)
        self.env.update(env or {})
        self.port = None
        self.guard = None
        self.proc = None
        self._log = None

    def __enter__(self):
        self._log = tempfile.TemporaryFile(mode="w+b")
        # cwd: "python -m" puts the working directory first on sys.path; a
        # neutral one makes the server import the installed keepalive_guard.
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            cwd=tempfile.gettempdir(),
        )
        try:
            port, guard = self._read_ready().split(" ", 1)
            self.port, self.guard = int(port), json.loads(guard)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _read_ready(self):
        """The server's ``READY <port> <guard json>`` line (unbuffered reads)."""
        fd, data = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                break
            data += chunk
        line = data.decode().partition("\n")[0]
        if not line.startswith("READY "):
            raise RuntimeError("server did not start; log:\n{}".format(self.log()))
        return line[len("READY ") :]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self):
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def client(self, timeout=5.0):
        return Client(self.port, timeout)
