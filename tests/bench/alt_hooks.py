"""Experimental alternatives to the guard's ``AssignmentHook`` (benchmark only).

Not part of the package: tests/bench/run.py's "experiment" section uses these
to measure whether a different hook design would be cheaper.  Each one is
applied after ``keepalive_guard.install()`` has patched the loaded protocol
modules, and replaces every ``AssignmentHook`` on ``<Protocol>.cycle`` with
the same callbacks (the fixes' own functions) run at the same moment:

``property``    ``property(operator.attrgetter("_kg_cycle"), fset)``: the value
                lives in a plain instance attribute ``_kg_cycle`` (never in
                ``instance.__dict__[...]``, which on CPython 3.11+ turns the
                instance's inline attribute values into a real dict and slows
                every attribute access); reads go through a C-level getter.
``cycle-init``  no descriptor on the protocol at all: wrap
                ``RequestResponseCycle.__init__`` and run the callbacks with
                ``kwargs["on_response"].__self__`` (the protocol; uvicorn has
                passed ``on_response=`` a bound protocol method on every
                release since 0.2.21) right after the cycle is built, i.e. in
                the statement that assigns ``self.cycle``.

The guard's uninstall() would refuse after this (foreign replacement), which
does not matter in a benchmark process.
"""

import functools
import importlib
import operator

MODULES = (
    ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
)


def _property(callbacks, shadow):
    def fset(instance, value):
        for callback in callbacks:
            callback(instance, value)
        setattr(instance, shadow, value)

    return property(operator.attrgetter(shadow), fset)


def _cycle_init(original, callbacks):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        protocol = kwargs["on_response"].__self__
        for callback in callbacks:
            callback(protocol, self)

    return __init__


def apply(kind, classes=None):
    """Replace the AssignmentHooks; return what was replaced, for the record."""
    from keepalive_guard import patcher

    if classes is None:
        classes = []
        for module_name, protocol_name in MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            classes.append((getattr(module, protocol_name), module.RequestResponseCycle))
    done = []
    for protocol_cls, cycle_cls in classes:
        hook = protocol_cls.__dict__.get("cycle")
        if not isinstance(hook, patcher.AssignmentHook):
            continue
        if kind == "property":
            protocol_cls.cycle = _property(hook.callbacks, "_kg_cycle")
        elif kind == "cycle-init":
            delattr(protocol_cls, "cycle")
            cycle_cls.__init__ = _cycle_init(cycle_cls.__init__, hook.callbacks)
        else:
            raise ValueError(kind)
        done.append(
            "{}.cycle ({}) -> {}".format(
                protocol_cls.__name__, ", ".join(getattr(hook, patcher.MARK)), kind
            )
        )
    return done
