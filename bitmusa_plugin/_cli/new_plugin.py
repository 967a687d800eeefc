"""``bitmusa-plugin new-plugin NAME``: scaffold a plugin package whose test passes as is."""

from __future__ import annotations

import argparse
from pathlib import Path

from bitmusa_plugin._cli.common import EXIT_OK, CommandError, Parser, add_command


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "new-plugin",
        run,
        help="create a ready plugin package (entry point, hook, passing test, README)",
        description="Writes DIR/NAME: a pyproject.toml declaring the entry point, the "
        "package with a hook, a test that passes as is, and a README.",
    )
    parser.add_argument("name", help="distribution name, e.g. my-notifier")
    parser.add_argument(
        "--directory",
        metavar="DIR",
        type=Path,
        default=Path("."),
        help="where to create it (default: the current directory)",
    )


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.scaffold import NAME_RE, create, next_steps, shadowed

    target = args.directory / args.name
    if not NAME_RE.match(args.name):
        raise CommandError(
            f"invalid plugin name {args.name!r}",
            "use lowercase letters, digits and single - or _, like my-notifier",
        )
    if target.exists():
        raise CommandError(
            f"cannot create {target}: it already exists", "choose another name or --directory"
        )
    taken = shadowed(args.name)
    if taken is not None:
        raise CommandError(
            f"invalid plugin name {args.name!r}: its module {taken!r} is installed already, and "
            "the plugin would replace or shadow it",
            f"choose another name, like bitmusa-{args.name.removeprefix('bitmusa-')}-plugin",
        )
    try:
        root = create(args.name, args.directory)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and str(exc.filename) != str(target):
            reason = f"{exc.filename}: {reason}"
        raise CommandError(
            f"cannot create {target}: {reason}", "give --directory a directory you can write to"
        ) from None
    except ValueError as exc:  # a rule of the scaffold's that NAME_RE does not hold
        raise CommandError(f"invalid plugin name {args.name!r}", str(exc)) from None
    print(f"created {root}")
    print(next_steps(root))
    return EXIT_OK
