"""keepalive-guard's start-up hook, imported by ``keepalive_guard.pth``.

Runs in every interpreter that has keepalive-guard installed, so it does as
little as possible and never raises:

* It puts a meta path finder in front that acts on two modules only:
  after ``uvicorn.config`` loads, the names ``guarded``, ``guarded-h11`` and
  ``guarded-httptools`` join ``HTTP_PROTOCOLS`` (so ``--http guarded`` and
  ``Config(http="guarded")`` work on every release and ``uvicorn --help``
  lists them); after ``uvicorn.main`` loads on releases whose ``--http`` is
  free text (0.36+), its help metavar lists them too.  Every other import
  costs one tuple membership test.
* Only when ``KEEPALIVE_GUARD`` is set to a true value does it import the
  package and install the guard; otherwise nothing else is imported.
"""

import os
import sys

HTTP_NAMES = (
    ("guarded", "keepalive_guard.protocols:AutoHTTPProtocol"),
    ("guarded-h11", "keepalive_guard.protocols:H11Protocol"),
    ("guarded-httptools", "keepalive_guard.protocols:HttpToolsProtocol"),
)
_TARGETS = ("uvicorn.config", "uvicorn.main")


def _after_config(module):
    protocols = getattr(module, "HTTP_PROTOCOLS", None)
    if isinstance(protocols, dict):
        for name, target in HTTP_NAMES:
            protocols.setdefault(name, target)


def _after_main(module):
    command = getattr(module, "main", None)
    for param in getattr(command, "params", ()):
        metavar = getattr(param, "metavar", None)
        if getattr(param, "name", None) == "http" and isinstance(metavar, str):
            if metavar.endswith("]") and "guarded" not in metavar:
                param.metavar = metavar[:-1] + "|" + "|".join(n for n, _ in HTTP_NAMES) + "]"


class _Loader(object):
    def __init__(self, loader, after):
        self._loader = loader
        self._after = after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._after(module)
        except Exception:  # never break uvicorn's import
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(object):
    """Wraps the loader of uvicorn.config and uvicorn.main; ignores the rest."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TARGETS:
            return None
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
            if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            after = _after_config if fullname == "uvicorn.config" else _after_main
            spec.loader = _Loader(spec.loader, after)
            return spec
        except Exception:
            return None


if not any(
    type(finder).__name__ == "_Finder" and type(finder).__module__ == __name__
    for finder in sys.meta_path
):
    sys.meta_path.insert(0, _Finder())

if os.environ.get("KEEPALIVE_GUARD", "").strip().lower() not in ("", "0", "false", "no", "off"):
    try:
        import keepalive_guard._startup  # noqa: F401
    except Exception as exc:  # a start-up hook must not stop the interpreter
        sys.stderr.write("keepalive-guard: start-up hook failed: {!r}\n".format(exc))
