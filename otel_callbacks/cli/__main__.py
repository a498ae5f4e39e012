"""``python -m otel_callbacks.cli``: the same as the ``otel-callbacks`` command."""

import sys

from . import main

sys.exit(main())
