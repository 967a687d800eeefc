"""Coverage-guided fuzzing of the decoder and mapping (atheris): ``make fuzz``.

Every input, as bytes and as text, must come out as an accepted frame or as a rejection
with a documented kind; an ``internal`` rejection (a bug caught by the safety net) or an
exception is a finding. Seeds: tests/corpus (every documented shape).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from bitmusa_hookspecs import FRAME_ERROR_KINDS
    from bitmusa_plugin._core.mapping import Mapped, Mapper, Rejected

HOOKS = {"on_order", "on_wallet", "on_position"}
mapper = Mapper(max_frame_bytes=1 << 16)


def check(raw: bytes | str) -> None:
    result = mapper.feed(raw, 0)
    if isinstance(result, Rejected):
        assert result.error["kind"] in FRAME_ERROR_KINDS, result.error
    else:
        assert isinstance(result, Mapped)
        assert result.hook in HOOKS


def test_one_input(data: bytes) -> None:
    check(data)
    provider = atheris.FuzzedDataProvider(data)
    check(provider.ConsumeUnicodeNoSurrogates(len(data)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
