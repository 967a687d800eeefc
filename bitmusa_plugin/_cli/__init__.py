"""The ``bitmusa-plugin`` command: one module per command, each with ``add_parser`` and
``run``; the exit statuses are in ``common`` (and docs/cli.md).

``main`` is the only place that turns an expected failure (:class:`~.common.CommandError`)
into its one line on standard error, a closed standard output into a quiet exit 0, and
Ctrl-C into a quiet exit 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bitmusa_plugin._cli.common import EXIT_INTERRUPTED, EXIT_OK, CommandError, Handler, verbosity
from bitmusa_plugin._cli.parser import build_parser
from bitmusa_plugin._cli.runtime import (
    cancelled_by_ctrl_c,
    ensure_std_streams,
    setup_logging,
    silence_stdout,
    stdout_is_closed,
)

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        ensure_std_streams()
        args = build_parser().parse_args(argv)
        setup_logging(verbosity(args))
        handler: Handler = args.handler
        status = handler(args)
        sys.stdout.flush()  # what print() still holds: a closed output shows here, not at exit
        return status
    except CommandError as exc:
        from bitmusa_plugin._engine.secrets import redact

        print(redact(exc.line()), file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        if not stdout_is_closed():
            raise  # a socket of ours, not `| head`: a failure, never a quiet exit
        # Standard output was closed (``| head``): stop quietly, as Unix tools do.
        silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        # Ctrl-C where the command does not handle SIGINT itself (listen, demo, simulate
        # and worker do, and exit 0): stop quietly, as Unix tools do.
        return EXIT_INTERRUPTED
    except BaseException as exc:
        if cancelled_by_ctrl_c(exc):
            return EXIT_INTERRUPTED
        raise
