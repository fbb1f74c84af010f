"""The one exception keepalive-guard raises."""


class KeepaliveGuardError(ValueError):
    """Bad input, or (in strict mode) code the guard does not recognise.

    Raised before anything is changed: uvicorn is never left half-patched.
    """
