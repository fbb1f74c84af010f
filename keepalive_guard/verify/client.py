"""A raw-socket HTTP/1.1 client (Python 3.6+, standard library only).

Raw sockets keep pipelining and the exact bytes on the wire under the
caller's control, which is what reproducing these races needs.  Every read
is bounded by a deadline.
"""

import socket
import struct
import time


class Response(object):
    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw

    def header(self, name):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Client(object):
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self.sock.close()

    def reset(self):
        """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read more bytes; False on EOF, a reset or the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            if not self._fill(deadline):
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def _read_exact(self, size, deadline):
        while len(self.buf) < size:
            if not self._fill(deadline):
                return None
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_head(self, timeout=5.0):
        """The next response's status line and headers, raw, or None."""
        return self._read_until(b"\r\n\r\n", time.monotonic() + timeout)

    def read_response(self, timeout=5.0, head_request=False):
        """The next response (skipping 1xx), or None if none arrives in time."""
        deadline = time.monotonic() + timeout
        while True:
            head = self._read_until(b"\r\n\r\n", deadline)
            if head is None:
                return None
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = [
                tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line
            ]
            if status >= 200 or status == 101:
                break
        response = Response(status, headers, b"", head)
        if head_request or status in (101, 204, 304):
            return response
        if response.header("content-length") is not None:
            body = self._read_exact(int(response.header("content-length")), deadline)
            if body is None:
                return None
            response.body, response.raw = body, head + body
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            raw, body = head, b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0], 16)
                chunk = self._read_exact(size + 2, deadline)
                if chunk is None:
                    return None
                raw += size_line + chunk
                body += chunk[:-2]
                if size == 0:
                    response.body, response.raw = body, raw
                    return response
        while self._fill(deadline):
            pass
        response.body, self.buf = self.buf, b""
        response.raw = head + response.body
        return response

    def read_frame(self, timeout=5.0):
        """The next WebSocket frame from the server as (opcode, payload), or None."""
        deadline = time.monotonic() + timeout
        head = self._read_exact(2, deadline)
        if head is None:
            return None
        size = head[1] & 0x7F
        if size >= 126:
            extra = self._read_exact(2 if size == 126 else 8, deadline)
            if extra is None:
                return None
            size = int.from_bytes(extra, "big")
        payload = self._read_exact(size, deadline)
        return None if payload is None else (head[0] & 0x0F, payload)

    def wait_closed(self, timeout):
        """Seconds until the server closes the connection, or None."""
        start = time.monotonic()
        deadline = start + timeout
        while not self.closed:
            if not self._fill(deadline):
                if self.closed:
                    break
                return None
        return time.monotonic() - start


def get(path, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def post(path, body, extra=b""):
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


WEBSOCKET_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


_MASK = b"\x37\xfa\x21\x3d"


def websocket_frame(payload, opcode=0x1):
    """A client's masked, final WebSocket frame (payload under 126 bytes)."""
    masked = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + _MASK + masked


def websocket_close():
    """A client's close frame, status 1000."""
    return websocket_frame(b"\x03\xe8", opcode=0x8)
