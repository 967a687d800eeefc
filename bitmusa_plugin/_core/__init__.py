"""The pure core: decoding, mapping, the per-account machine, resync planning, the lease
planner and the failure classification. Nothing here touches a socket, a clock, a thread or
an event loop (``lint-imports`` enforces it): the I/O shells in ``_engine`` drive it, and
tests drive it on a fake clock."""

__all__ = ["compiled"]


def compiled() -> bool:
    """True when the hot path's modules are the optional compiled build (mypyc, from
    ``make compiled``), False for the pure-Python package, the reference. Nothing is
    imported to answer."""
    from importlib.util import find_spec  # here: `--help` need not import it

    spec = find_spec("bitmusa_plugin._core.build")
    return spec is not None and spec.origin is not None and not spec.origin.endswith(".py")
