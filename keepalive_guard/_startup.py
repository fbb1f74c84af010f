"""Imported by ``keepalive_guard.pth`` at interpreter start-up, only when
``KEEPALIVE_GUARD`` is set to a true value: installs the guard for a process
(and its spawned children, which inherit the variable) with no code change.
Nothing here imports uvicorn; patches land when uvicorn's protocol modules load.
"""

from . import config
from .guard import install

if config.env_flag(config.ENABLE):
    install()
