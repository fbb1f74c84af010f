"""``import keepalive_guard.auto``: install the guard at import time.

``KEEPALIVE_GUARD=0`` turns it off; ``KEEPALIVE_GUARD_FIXES`` and
``KEEPALIVE_GUARD_STRICT`` apply as they do to ``install()``.
"""

from . import config
from .guard import install

report = None if config.env_disabled(config.ENABLE) else install()
