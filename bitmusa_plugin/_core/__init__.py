"""The pure core: decoding, mapping, the per-account machine, resync planning, the lease
planner and the failure classification. Nothing here touches a socket, a clock, a thread or
an event loop (``lint-imports`` enforces it): the I/O shells in ``_engine`` drive it, and
tests drive it on a fake clock."""
