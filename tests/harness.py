"""The real-server machinery the tests share with ``keepalive-guard verify``."""

from keepalive_guard.verify.client import WEBSOCKET_UPGRADE, Client, Response, get, post
from keepalive_guard.verify.server import Server

__all__ = ["WEBSOCKET_UPGRADE", "Client", "Response", "Server", "get", "post"]
