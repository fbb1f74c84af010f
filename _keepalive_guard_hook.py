"""keepalive-guard's start-up hook, imported by ``keepalive_guard.pth`` in every
interpreter that has keepalive-guard installed (stdlib only, Python 3.6+).

It must cost next to nothing where uvicorn is never imported, so it is as
small as a module can be: it puts itself first on ``sys.meta_path`` as a
finder that finds nothing and, when ``uvicorn`` is first imported, calls
``_keepalive_guard_boot.boot()`` (which then takes it off ``sys.meta_path``).
With ``KEEPALIVE_GUARD`` set, it boots at once.

Counted with callgrind (see the benchmarks): importing this module from its
.pyc costs less than a .pth line defining the same finder, whose parsing
alone cost more; and it binds no module but ``sys``, because a finder whose
globals hold ``os`` made every interpreter's exit do about 0.45M more
instructions of module clean-up.
"""

# Standard library only, and no wrapt: this runs in every Python process of
# the environment, and importing wrapt (a C extension plus its Python
# modules) would cost each of them more than this whole hook does.
import sys


def find_spec(name, path=None, target=None):
    """The meta path finder's method: boot on ``import uvicorn``, find nothing."""
    if name == "uvicorn":
        __import__("_keepalive_guard_boot").boot()
    return None


if __import__("os").environ.get("KEEPALIVE_GUARD"):
    __import__("_keepalive_guard_boot").boot()
else:
    sys.meta_path.insert(0, sys.modules[__name__])
