"""Before and after, in one run: the same benchmark script against two revisions of the code.

    python benchmarks/ab.py REV benchmarks/bench_dispatch.py [--rounds 5] -- [script args]

REV (a commit, a tag) is exported to a temporary directory; the script (always the working
tree's, so both sides are measured by the same code) then runs alternately with the
exported tree and the working tree first on ``PYTHONPATH``, ``--rounds`` times each, so
that the machine's drift hits both alike. The script must accept ``--json`` and print one
JSON object of numbers as its last line; this prints each number's median on both sides
and the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, into: Path) -> str:
    """Unpack ``rev``'s tree into ``into``; its full commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def run(script: Path, tree: Path, args: list[str]) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "hookspecs")])
    out = subprocess.run(
        [sys.executable, str(script), "--json", *args],
        # cwd is the measured tree: a child started with ``python -m`` puts its cwd
        # first on sys.path, ahead of PYTHONPATH, so cwd=ROOT measured the working
        # tree on both sides.
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = orjson.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision measured as 'before'")
    parser.add_argument("script", type=Path, help="a benchmark that accepts --json")
    parser.add_argument("--rounds", type=int, default=5)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    opts = parser.parse_args(argv[:cut])
    args = argv[cut + 1 :]  # the script's own arguments
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="bitmusa-ab-") as tmp:
        commit = export(opts.rev, Path(tmp))
        for _ in range(opts.rounds):
            for side, tree in (("before", Path(tmp)), ("after", ROOT)):
                for key, value in run(opts.script.resolve(), tree, args).items():
                    samples[side].setdefault(key, []).append(value)
    print(
        f"ab: {opts.script.name} {' '.join(args)}; before = {commit[:10]}, after = the working "
        f"tree; {opts.rounds} interleaved rounds; medians; {time.strftime('%Y-%m-%d')}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print()
    print("| measure | before | after | after - before | after / before |")
    print("|---|---|---|---|---|")
    for key, before in samples["before"].items():
        after = samples["after"].get(key)
        if not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        ratio: Any = f"{a / b:.3f}" if b else "-"
        print(f"| {key} | {b:.3f} | {a:.3f} | {a - b:+.3f} | {ratio} |")


if __name__ == "__main__":
    main()
