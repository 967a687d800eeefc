"""The optional compiled core; everything else about the package is in pyproject.toml.

A plain build (``pip install``, ``make dist``) gives the pure-Python package, the reference.
``BITMUSA_MYPYC=1`` compiles the hot path's pure modules with mypyc into a platform wheel
(``make compiled``, docs/architecture.md "The compiled core"): the same ``.py`` files ship
beside their extension modules, and Python imports the extension first. It builds without
isolation, in an environment holding mypy and bitmusa-hookspecs (the dev extra has both).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

# The modules a frame passes through, from decode to the ccxt dicts, the fills and the
# resync ledger, and the engine's one ingest step that drives them. Each must also pass the
# suite compiled (make unit-compiled): mypyc checks the annotations at run time, and a
# compiled class cannot be subclassed in Python.
COMPILED = [
    *(
        f"bitmusa_plugin/_core/{name}.py"
        for name in ("numbers", "symbols", "wire", "build", "mapping", "fills", "orders", "resync")
    ),
    "bitmusa_plugin/_engine/pipeline.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("BITMUSA_MYPYC") != "1":
        return []
    try:
        from mypyc.build import mypycify

        import bitmusa_hookspecs  # the contract the modules import, for mypy to read
    except ImportError as exc:
        raise SystemExit(
            f"BITMUSA_MYPYC=1 needs mypy and bitmusa-hookspecs in the build environment "
            f"({exc.name} is missing): build with --no-isolation from the dev venv "
            "(make compiled)"
        ) from None

    contract = Path(bitmusa_hookspecs.__file__).parent
    return list(
        mypycify(
            [*COMPILED, str(contract)],
            only_compile_paths=COMPILED,
            opt_level="3",
            group_name="bitmusa_plugin",
        )
    )


setup(ext_modules=_ext_modules())
