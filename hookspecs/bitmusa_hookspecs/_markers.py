"""The pluggy markers, tied to the project name every plugin registers under."""

from __future__ import annotations

import pluggy

#: The pluggy project name, and the entry-point group plugins are found in.
PROJECT_NAME = "bitmusa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
