"""keepalive-guard: uvicorn's keep-alive and disconnect fixes for pinned releases.

``install()`` patches uvicorn (now or when it is imported), ``uninstall()``
restores it exactly, ``status()`` says what was decided and why.
"""

from .errors import KeepaliveGuardError
from .fixes import FIX_IDS
from .guard import install, status, uninstall
from .report import Report

__version__ = "0.1.0"

__all__ = [
    "FIX_IDS",
    "KeepaliveGuardError",
    "Report",
    "install",
    "status",
    "uninstall",
    "__version__",
]
