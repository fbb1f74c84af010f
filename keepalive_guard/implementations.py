"""Where uvicorn keeps the classes we patch, and which release is installed.

Each implementation's module has had two names: ``uvicorn.protocols.http.h11``
and ``httptools`` in 0.2.0-0.2.16, ``h11_impl`` and ``httptools_impl`` since
0.2.17; each holds a protocol class and its own ``RequestResponseCycle``.
Versions are PEP 440 (``packaging``), imported only when a decision is made.
Nothing here imports uvicorn unless asked to.
"""

import importlib
import os
import sys
from typing import Any, Dict, Optional, Tuple

#: A packaging.version.Version (imported lazily: see ``release``).
Release = Any

H11 = "h11"
HTTPTOOLS = "httptools"


class Implementation(object):
    """One of uvicorn's HTTP/1.1 implementations."""

    def __init__(self, name: str, modules: "Tuple[str, ...]", protocol: str, library: str) -> None:
        self.name = name
        self.modules = modules
        self.module = modules[0]
        self.protocol_name = protocol
        self.cycle_name = "RequestResponseCycle"
        self.library = library

    def loaded_module(self) -> "Optional[object]":
        """The module if it has finished importing, else None (never imports)."""
        for name in self.modules:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, self.cycle_name):
                return module
        return None

    def import_module(self) -> "Tuple[Optional[object], Optional[str]]":
        """Import the module; return (module, None) or (None, why it failed)."""
        why = ""
        for name in self.modules:
            try:
                return importlib.import_module(name), None
            except ImportError as exc:
                missing = getattr(exc, "name", None)
                if missing is not None and name.startswith(missing):
                    continue  # this release names the module otherwise
                why = str(exc)
                break
        return None, "{} cannot be imported ({})".format(
            self.module, why or "no module of that name"
        )

    def classes(self, module: object) -> "Dict[str, type]":
        """The patched classes by role, ``protocol`` and ``cycle``."""
        return {
            "protocol": getattr(module, self.protocol_name),
            "cycle": getattr(module, self.cycle_name),
        }


IMPLEMENTATIONS = (
    Implementation(
        H11,
        ("uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.h11"),
        "H11Protocol",
        "h11",
    ),
    Implementation(
        HTTPTOOLS,
        ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.httptools"),
        "HttpToolsProtocol",
        "httptools",
    ),
)


def distribution_version(module_name: str) -> "Optional[str]":
    """The version of an importable module, or None if it cannot be imported.

    ``__version__`` first (uvicorn, h11 and httptools carry it, and it avoids
    a slow scan of installed distributions), then the distribution metadata
    where importlib.metadata exists (3.8+), else ``"unknown"``: httptools
    0.0.13, which uvicorn 0.11 pins on Python 3.6, has no ``__version__``.
    """
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    version = getattr(module, "__version__", None)
    if version is not None:
        return str(version)
    try:
        from importlib.metadata import version as metadata_version  # Python 3.8+

        return metadata_version(module_name)
    except Exception:  # no importlib.metadata (3.6, 3.7) or no metadata found
        return "unknown"


def uvicorn_version_text() -> "Optional[str]":
    """The installed uvicorn's version without importing it, or None if unknown.

    ``uvicorn.__version__`` once it is set; before that the
    ``uvicorn-X.dist-info`` (or ``.egg-info``) beside the first ``uvicorn``
    package on ``sys.path``, the one an import would load.  A directory
    listing, not importlib.metadata, whose import costs more than the rest of
    ``install()``.
    """
    version = getattr(sys.modules.get("uvicorn"), "__version__", None)
    if version is not None:
        return str(version)
    # Not imported, or still importing: 0.2.x's __init__ imports the protocol
    # modules before it sets __version__.
    for entry in sys.path:
        try:
            if not os.path.isdir(os.path.join(entry or ".", "uvicorn")):
                continue
            names = os.listdir(entry or ".")
        except (OSError, TypeError):
            continue
        # uvicorn-0.27.0.dist-info, uvicorn-0.2.5-py3.6.egg-info
        found = [
            name[len("uvicorn-") : -len(".dist-info")].split("-")[0]
            for name in names
            if name.startswith("uvicorn-") and name.endswith((".dist-info", ".egg-info"))
        ]
        return found[0] if len(found) == 1 else None
    return None


def parse_version(text: "Optional[str]") -> "Optional[Release]":
    """``text`` as a PEP 440 version, or None if it is not one."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version((text or "").strip())
    except InvalidVersion:
        return None


_RELEASES: "Dict[str, Release]" = {}


def release(text: str) -> Release:
    """A literal release written in this package, parsed once."""
    version = _RELEASES.get(text)
    if version is None:
        version = parse_version(text)
        if version is None:
            raise ValueError("not a release: {!r}".format(text))
        _RELEASES[text] = version
    return version
