"""The reduced chaos profile in every `make test`; `make soak` runs the full week
(``BITMUSA_SOAK_PROFILE=week``).

``BITMUSA_SOAK_SEED`` picks the seed (default: fixed, so CI is reproducible); a failure
prints it, and the same seed deals the same faults into the same trading session.
"""

from __future__ import annotations

import os

from chaos_soak import PROFILES, soak


async def test_a_stormy_day_then_a_calm_one_loses_nothing_and_leaks_nothing() -> None:
    seed = int(os.environ.get("BITMUSA_SOAK_SEED", "20261124"))
    figures = await soak(PROFILES[os.environ.get("BITMUSA_SOAK_PROFILE", "ci")], seed)
    print(figures)  # shown with -s / on failure
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    assert figures["delivered"] > 5000
