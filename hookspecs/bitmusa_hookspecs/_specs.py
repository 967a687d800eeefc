"""The hook specifications. Each docstring is that hook's reference (see docs/hooks.md).

Every implementation may be ``def`` or ``async def`` and may accept any subset of the
arguments (pluggy's rule): ``def on_order(order): ...`` is a valid implementation.
The host delivers each event to each plugin through that plugin's own ordered queue, so
one plugin that raises, blocks or falls behind never affects another; a sync
implementation runs in a worker thread of its plugin, an async one on the event loop.
Every plugin receives its own copy of each object: mutating it affects no one else.

When a plugin falls behind, its delivery policy decides (``bitmusa_delivery``, see
:data:`~bitmusa_hookspecs.DeliveryPolicy`): ``latest`` (the default) merges queued states of
one order, position or balance into the newest, ``all`` delivers every call and makes the
stream wait for the plugin.
"""

from __future__ import annotations

from ._markers import hookspec
from ._types import Balance, Context, ErrorInfo, Event, Order, Position, StreamState, Trade


@hookspec
def on_wallet(balance: Balance, event: Event) -> None:
    """A ``future_wallet`` frame arrived: the account's balance changed.

    ``balance`` is the whole futures account balance in ccxt's unified shape *after*
    this update: cumulative across every asset seen since the stream started, not only
    the asset in this frame. ``total`` is ``free + used``, computed exactly.
    ``balance["info"]`` is this frame's raw ``data``. At start-up and after every gap the
    REST snapshot's wallet arrives here too, with ``event["stream"] == "resync"``.

    Example::

        @hookimpl
        def on_wallet(balance):
            print("USDT free:", balance["free"].get("USDT"))
    """


@hookspec
def on_order(order: Order, event: Event) -> None:
    """A ``future_order`` frame arrived: one of the account's orders changed.

    ``order`` is a ccxt unified order (``status`` ``open``/``closed``/``canceled``,
    ``filled``, ``remaining``, ``average``, ...), derived exactly as ccxt's
    ``safe_order`` would. ``order["info"]`` is the raw ``data``.

    It also fires for **snapshots**: at start-up and after every gap, each open order the
    REST snapshot shows (and each order that is gone since) arrives here with
    ``event["stream"] == "resync"``. An order is a state: a snapshot of a partly filled
    order is not a new fill. To announce fills, implement :func:`on_trade`, which fires
    once per fill and never for a snapshot.

    ``order["side"]`` is known for every order this process placed or a snapshot or the
    trade history listed. Bitmusa's order stream carries none, so for an order another
    client of the account placed (the web page, another bot, an earlier run) the host
    chooses, by ``side_wait``:

    - **0, the engine's default** (``Session``, ``listen``, ``worker``): the order goes
      out at once, in wire order, with ``side`` None, reported once (``side_unknown``);
    - **above 0** (``Session(side_wait=0.25)``, ``listen --side-wait 0.25``; **the ccxt
      drop-in's default**, ``options['sideWait']`` 0.25, since ccxt's orders and trades
      carry a side): an order the engine has not seen is held, with only its own later
      frames, until its side is read from its ticker's open orders (or, if it is already
      done, its trade history), for at most ``side_wait``. Nothing else waits: the
      account's other objects flow on past it, so each object's updates keep their order
      but the wire order across objects does not. The orders waiting on one ticker share
      its reads, and a keep-alive takes its turn before them. If the side cannot be
      learnt in that time it is delivered with ``side`` None, reported once
      (``side_unknown``, with why).

    It is off by default because it reorders delivery across objects and spends REST
    reads: turn it on when your plugins need the sides of other clients' orders.

    Example::

        @hookimpl
        async def on_order(order, event):
            if order["status"] == "closed":
                await notify(f"{order['symbol']} filled {order['filled']} @ {order['average']}")
    """


@hookspec
def on_trade(trade: Trade, event: Event) -> None:
    """One of the account's orders was filled, wholly or in part: one call per fill.

    Only new fills: never a snapshot. A notifier can announce every call. Each fill
    arrives once, right after the ``on_order`` that showed it (``event["stream"]`` is
    ``future_order``, ``event["data"]`` that order's payload), or, for fills that happened
    while the stream was down, once the gap's resync has recovered them from the trade
    history (``event["stream"]`` is ``resync``, ``event["data"]`` the history record);
    either way ``trade["id"]`` is the same. ``amount`` and ``cost`` of an order's trades add
    up exactly to its ``filled`` and ``cost``, however long the gap: the history is read
    back to the gap's start, page after page, within ``history_budget`` (30 s). Where it
    cannot cover the gap (it fails, or the bound runs out, or an order filled again while
    it was read), an **estimated** trade closes the order's amount and cost exactly
    (``trade["info"]["estimated"]`` True, no fee), reported as ``trade_estimated``. Trades
    are events: never merged, whatever the plugin's delivery policy.

    ``trade["side"]`` is the order's side, learnt as :func:`on_order` says: None only when
    ``side_wait`` is 0 (the engine's default) or it could not be learnt within it
    (reported once as ``side_unknown``).

    Example::

        @hookimpl
        async def on_trade(trade):
            await notify(f"{trade['side']} {trade['amount']} {trade['symbol']} @ {trade['price']}")
    """


@hookspec
def on_position(position: Position, event: Event) -> None:
    """A ``future_position`` frame arrived: one of the account's positions changed.

    ``position`` is a ccxt unified position. A position closed by the user, by
    liquidation, by take-profit or by stop-loss arrives with ``contracts == 0`` and
    ``notional == 0``; the reason stays in ``position["info"]["status"]``. Like
    :func:`on_order`, it also fires for snapshots (``event["stream"] == "resync"``): a
    position that went flat while the stream was down arrives so, with
    ``position["info"]["resync"]`` saying why.

    Example::

        @hookimpl
        def on_position(position):
            if position["contracts"] == 0:
                print(position["symbol"], "is flat")
    """


@hookspec
def on_stream_state(state: StreamState) -> None:
    """An account's stream changed state.

    ``state["status"]`` is one of ``connecting``, ``connected``, ``disconnected``,
    ``gap``, ``rotating``, ``rotated``, ``closed``, ``failed``. Exactly one ``gap``
    follows each unplanned disconnect, after the new connection is up and before its
    first event, with ``since``/``until`` (ms) bounding what may have been missed: resync
    there. ``replay`` reports ``connected`` at the start and ``closed`` at the end.

    Example::

        @hookimpl
        def on_stream_state(state):
            if state["status"] == "gap":
                print("missed", state["since"], "to", state["until"], "on", state["account"])
    """


@hookspec
def on_error(error: ErrorInfo, event: Event | None) -> None:
    """Something failed and was contained; the stream goes on.

    Fires for a frame that could not be decoded or mapped (``event`` is ``None``, the
    frame's text is in ``error["raw"]``, truncated), a plugin that raised or fell behind
    (``error["plugin"]`` names it, ``event`` is the event it failed on), and a REST
    failure. ``error["kind"]`` is one of the kinds listed in docs/hooks.md. An exception
    raised by an ``on_error`` implementation is logged, never re-dispatched.

    Example::

        @hookimpl
        def on_error(error):
            log.warning("bitmusa %s: %s", error["kind"], error["message"])
    """


@hookspec
def on_startup(context: Context) -> None:
    """The host is starting, before the first event. Open files and sessions here.

    Example::

        @hookimpl
        def on_startup(context):
            print("bitmusa-plugin", context["version"], "for", context["accounts"])
    """


@hookspec
def on_shutdown(context: Context) -> None:
    """The host is stopping, after the last event was delivered. Flush and close here.

    Example::

        @hookimpl
        async def on_shutdown(context):
            await session.close()
    """


@hookspec
def on_idle() -> None:
    """This plugin's queue has drained: every call so far has been delivered to it.

    Called once after each burst, never while calls wait. A plugin that buffers (a file
    recorder, a database writer) flushes or commits here: its output is then as current as
    the stream, and during a burst it writes in batches instead of once per event.

    Example::

        @hookimpl
        def on_idle():
            out.flush()
    """
