"""``python -m bitmusa_plugin`` is the ``bitmusa-plugin`` command."""

import sys

from .cli import main

sys.exit(main())
