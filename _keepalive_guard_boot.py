"""keepalive-guard's import hooks and the start-up hook's boot (stdlib only, 3.6+).

``keepalive_guard.pth`` imports ``_keepalive_guard_hook`` in every interpreter
that has keepalive-guard installed.  That module loads nothing else: with
``KEEPALIVE_GUARD`` set it calls ``boot()`` at once; otherwise it puts itself
first on ``sys.meta_path`` as a finder that only calls ``boot()`` when
``uvicorn`` is first imported (and finds nothing itself), so an interpreter
that never imports uvicorn never loads this module.  This module does as
little as possible and never raises into an import:

* ``when_imported(name, callback)`` calls ``callback(module)`` once ``name``
  has finished importing (at once if it already has): ``boot()`` registers
  the ``--http`` names this way.  (The guard itself uses wrapt's post-import
  hooks; this module cannot: see ``_keepalive_guard_hook``.)  A meta path
  finder acts on registered names only; every other import costs one dict
  look-up, and only while a callback is awaited: once none is, it leaves
  ``sys.meta_path``, and so does the start-up hook's finder.
* ``boot()`` registers the ``--http guarded|guarded-h11|guarded-httptools``
  names for when ``uvicorn.config`` loads (so they work on every release and
  ``uvicorn --help`` lists them; on 0.36+, whose ``--http`` is free text,
  the help text of ``uvicorn.main`` too), and installs the guard only when
  ``KEEPALIVE_GUARD`` is set to a true value.

It is a top-level module so that importing it does not import the package.
"""

import _thread  # not threading: importing that at every start-up costs more than the hook
import os
import sys

HTTP_NAMES = (
    ("guarded", "keepalive_guard.protocols:AutoHTTPProtocol"),
    ("guarded-h11", "keepalive_guard.protocols:H11Protocol"),
    ("guarded-httptools", "keepalive_guard.protocols:HttpToolsProtocol"),
)

_lock = _thread.RLock()
_callbacks = {}  # module name -> [callback, ...] still to run
_booted = False


def when_imported(name, callback):
    """Run ``callback(module)`` after ``name`` is imported, or now if it was."""
    with _lock:
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            _ensure_finder()
            _callbacks.setdefault(name, []).append(callback)
            return
    callback(module)


def forget(names):
    """Stop waiting for ``names`` (a release that has none of them)."""
    with _lock:
        for name in names:
            _callbacks.pop(name, None)
        if not _callbacks:
            _remove_finders()


def _fire(module):
    with _lock:
        callbacks = _callbacks.pop(module.__name__, [])
        if not _callbacks:
            _remove_finders()
    for callback in callbacks:
        callback(module)


def _remove_finders():
    """Once nothing is awaited, no finder of ours runs on every later import.

    A new list takes the old one's place: an import going on in another
    thread keeps looping over the old list, which removing from it in place
    would make skip a finder.  The start-up hook's finder goes too once it
    has booted.
    """

    hook = sys.modules.get("_keepalive_guard_hook") if _booted else None

    def ours(finder):
        return isinstance(finder, _Finder) or (hook is not None and finder is hook)

    if any(ours(finder) for finder in sys.meta_path):
        sys.meta_path = [finder for finder in sys.meta_path if not ours(finder)]


class _Loader(object):
    """Wraps a module's loader to run the registered callbacks after it executes."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _fire(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(object):
    """First on sys.meta_path; wraps the loader of registered modules only."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _callbacks:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _ensure_finder():
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _quietly(function):
    """A callback that never breaks the import it runs in."""

    def callback(module):
        try:
            function(module)
        except Exception:
            pass

    return callback


def _register_http_names(config):
    protocols = getattr(config, "HTTP_PROTOCOLS", None)
    if isinstance(protocols, dict):
        for name, target in HTTP_NAMES:
            protocols.setdefault(name, target)


def _after_main(main):
    """uvicorn.main imports uvicorn.config where there is one (0.3.26+): once
    main has loaded without it, the release has none to wait for."""
    if "uvicorn.config" not in sys.modules:
        forget(["uvicorn.config"])
    _list_http_names_in_help(main)


def _list_http_names_in_help(main):
    for param in getattr(getattr(main, "main", None), "params", ()):
        metavar = getattr(param, "metavar", None)
        if getattr(param, "name", None) == "http" and isinstance(metavar, str):
            if metavar.endswith("]") and "guarded" not in metavar:
                param.metavar = metavar[:-1] + "|" + "|".join(n for n, _ in HTTP_NAMES) + "]"


def boot():
    """The start-up hook: see the module docstring.  Runs once per process."""
    global _booted
    with _lock:
        if _booted:
            return
        _booted = True
    when_imported("uvicorn.config", _quietly(_register_http_names))
    when_imported("uvicorn.main", _quietly(_after_main))
    if os.environ.get("KEEPALIVE_GUARD", "").strip().lower() not in ("", "0", "false", "no", "off"):
        try:
            import keepalive_guard._startup  # noqa: F401
        except Exception as exc:  # a start-up hook must not stop the interpreter
            sys.stderr.write("keepalive-guard: start-up hook failed: {!r}\n".format(exc))
