"""``bitmusa-plugin accounts add|remove|list``: the registry worker mode streams from.

A record holds the label and references to the credentials (environment-variable names,
or a credentials file's path), resolved by each worker; never the secrets.
"""

from __future__ import annotations

import argparse

from bitmusa_plugin._cli.common import (
    DEFAULT_WS_URL,
    EXIT_OK,
    CommandError,
    Parser,
    add_command,
    add_readings,
    add_redis_url,
    readings,
    rest_url,
    ws_url,
)


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "accounts",
        run,
        help="register accounts in Redis for worker mode",
        description="Records hold the label and references to the credentials "
        "(environment-variable names, or a credentials file path), resolved by each "
        "worker; never the secrets.",
    )
    parser.add_argument("action", choices=("add", "remove", "list"))
    parser.add_argument("label", nargs="?", help="the account's label (add, remove)")
    add_redis_url(parser, required=True, help="the registry's Redis")
    parser.add_argument("--group", default="default", help="the registry's name (default: default)")
    parser.add_argument("--api-key-env", metavar="NAME", help="variable holding the API key")
    parser.add_argument("--auth-key-env", metavar="NAME", help="variable holding the auth key")
    parser.add_argument(
        "--credentials-file",
        metavar="PATH",
        help="a TOML file with api_key and auth_key (mode 600), on each worker",
    )
    parser.add_argument(
        "--rest-url",
        metavar="URL",
        type=rest_url,
        default=None,
        help="the account's REST base (default: the worker's --rest-url)",
    )
    parser.add_argument(
        "--ws-url",
        metavar="URL",
        type=ws_url,
        default=None,
        help=f"the account's websocket base (default: {DEFAULT_WS_URL})",
    )
    add_readings(parser)  # unset: the worker's own (its flags, or the documented reading)


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import redis_connection, run_loop
    from bitmusa_plugin._scale import registry

    record = None
    if args.action != "list" and not args.label:
        raise CommandError(
            f"accounts {args.action} needs a LABEL",
            f"give the account's label after '{args.action}'",
        )
    if args.action == "add":
        try:
            record = registry.AccountRecord(
                args.label,
                args.api_key_env,
                args.auth_key_env,
                args.credentials_file,
                args.rest_url,
                args.ws_url,
                **readings(args),
            )
        except ValueError as exc:
            raise CommandError(f"cannot add account {args.label!r}", str(exc)) from None

    async def main() -> None:
        async with redis_connection(args.redis) as client:
            if args.action == "list":
                for label, found in sorted((await registry.load(client, args.group)).items()):
                    refs = found.credentials_file or f"${found.api_key_env} ${found.auth_key_env}"
                    line = f"{label}\t{refs}\t{found.rest_url or ''}\t{found.ws_url or ''}"
                    chosen = found.readings()  # the readings it sets, if any
                    if chosen:
                        line += "\t" + " ".join(f"{k}={v}" for k, v in chosen.items())
                    print(line)
            elif args.action == "remove":
                if not await registry.remove(client, args.group, args.label):
                    raise CommandError(
                        f"no account {args.label!r} in group {args.group!r}",
                        "see bitmusa-plugin accounts list",
                    )
            else:
                assert record is not None
                await registry.add(client, args.group, record)

    run_loop(main())
    return EXIT_OK
