"""``python -m bitmusa_plugin`` is the ``bitmusa-plugin`` command."""

import sys

from bitmusa_plugin._cli import main

sys.exit(main())
