"""A verify server whose protocols carry another wrapt instrumentor's wrappers.

``on_response_complete`` of every loaded implementation gets a foreign
``wrapt`` wrapper before ``keepalive_guard.install()`` and another after it,
as OpenTelemetry-style instrumentors would; each logs ``foreign below`` /
``foreign above`` per call, so the test can count them in the server's log.
Arguments are ``keepalive_guard.verify.serve``'s.
"""

import logging

import wrapt

import keepalive_guard
from keepalive_guard.implementations import IMPLEMENTATIONS
from keepalive_guard.verify import serve

log = logging.getLogger("foreign")


def counter(tag):
    def wrapper(wrapped, instance, args, kwargs):
        log.warning("foreign %s", tag)
        return wrapped(*args, **kwargs)

    return wrapper


def instrument(tag):
    for impl in IMPLEMENTATIONS:
        module, _ = impl.import_module()
        if module is not None:
            wrapt.wrap_function_wrapper(
                module, impl.protocol_name + ".on_response_complete", counter(tag)
            )


if __name__ == "__main__":
    instrument("below")
    keepalive_guard.install()
    instrument("above")
    serve.main()
