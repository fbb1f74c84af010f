"""``python -m keepalive_guard``: the same as the ``keepalive-guard`` command."""

import sys

from .cli import main

sys.exit(main())
