"""The draft public market stream (placeholder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from . import Simulator


def add_routes(app: web.Application, sim: Simulator) -> None:
    pass


async def pusher(sim: Simulator) -> None:
    pass


def close_all(sim: Simulator) -> None:
    pass
