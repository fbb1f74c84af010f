"""Activation timing, one sample per process; run by tests/bench/run.py.

Runs inside a benchmark environment::

    <env python> tests/bench/activation.py MODE

MODE ``breakdown`` (protocol modules loaded) times ``import keepalive_guard``
and ``keepalive_guard.install()`` separately and lists the modules outside
the package that the import pulled in.

Otherwise MODE is ``loaded-guard`` / ``loaded-none`` (uvicorn and both protocol
modules imported first, then ``import keepalive_guard.auto``: the guard
decides and patches at once) or ``deferred-guard`` / ``deferred-none``
(only ``import uvicorn`` first; the guard registers post-import hooks and
patches when the protocol modules are imported afterwards, which is timed
too).  Prints one JSON line; times in milliseconds (time.perf_counter).
"""

import json
import sys
import time


def breakdown():
    import uvicorn  # noqa: F401
    import uvicorn.protocols.http.h11_impl  # noqa: F401
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    before = set(sys.modules)
    t0 = time.perf_counter()
    import keepalive_guard

    t1 = time.perf_counter()
    keepalive_guard.install()
    t2 = time.perf_counter()
    new = sorted(set(sys.modules) - before)
    print(
        json.dumps(
            {
                "mode": "breakdown",
                "import_ms": (t1 - t0) * 1e3,
                "install_ms": (t2 - t1) * 1e3,
                "new_modules": len(new),
                "new_foreign_modules": sorted(
                    {m.split(".")[0] for m in new if not m.startswith("keepalive_guard")}
                ),
                "applied": None,
            }
        )
    )


def main(mode):
    if mode == "breakdown":
        return breakdown()
    when, arm = mode.split("-")
    t0 = time.perf_counter()
    import uvicorn  # noqa: F401

    t1 = time.perf_counter()
    if when == "loaded":
        import uvicorn.protocols.http.h11_impl  # noqa: F401
        import uvicorn.protocols.http.httptools_impl  # noqa: F401
    t2 = time.perf_counter()
    if arm == "guard":
        import keepalive_guard.auto  # noqa: F401
    t3 = time.perf_counter()
    if when == "deferred":
        import uvicorn.protocols.http.h11_impl  # noqa: F401
        import uvicorn.protocols.http.httptools_impl  # noqa: F401
    t4 = time.perf_counter()
    applied = None
    if arm == "guard":
        import keepalive_guard

        report = keepalive_guard.status(import_modules=False)
        applied = sorted("{}:{}".format(s.implementation, s.fix) for s in report.applied)
    print(
        json.dumps(
            {
                "mode": mode,
                "import_uvicorn_ms": (t1 - t0) * 1e3,
                "import_protocols_before_ms": (t2 - t1) * 1e3,
                "guard_ms": (t3 - t2) * 1e3,
                "import_protocols_after_ms": (t4 - t3) * 1e3,
                "applied": applied,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
