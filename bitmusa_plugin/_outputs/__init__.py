"""Built-in output plugins. They implement the same hooks a third-party plugin would and
are registered through the same path (``PluginRegistry.register`` in ``_engine/plugins.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from bitmusa_plugin._outputs.jsonl import JsonlOutput

OUTPUT_NAMES = ("pretty", "jsonl", "dashboard", "none")


def make_output(
    name: str, stream: IO[str] | None = None, *, on_closed: Callable[[], None] | None = None
) -> object | None:
    """The built-in output plugin called ``name`` (``none`` gives None). ``on_closed`` is
    called once, from the plugin's thread, when its output is closed (``| head``)."""
    if name == "jsonl":
        return JsonlOutput(stream, on_closed=on_closed)
    if name == "pretty":
        from bitmusa_plugin._outputs.pretty import (
            PrettyOutput,  # rich is imported only when it is used
        )

        return PrettyOutput(stream, on_closed=on_closed)
    if name == "dashboard":
        from bitmusa_plugin._outputs.dashboard import DashboardOutput

        return DashboardOutput(stream, on_closed=on_closed)
    if name == "none":
        return None
    raise ValueError(f"unknown output {name!r}; choose from {', '.join(OUTPUT_NAMES)}")


__all__ = ["OUTPUT_NAMES", "JsonlOutput", "make_output"]
