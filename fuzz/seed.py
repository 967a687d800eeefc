"""Writes the fuzzing seeds (tests/corpus, one frame a file) into the given directory."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

CORPUS = Path(__file__).parent.parent / "tests" / "corpus"


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    frames = (CORPUS / "frames.txt").read_text().splitlines()
    frames += [row.split("\t", 1)[1] for row in (CORPUS / "rejected.txt").read_text().splitlines()]
    for frame in frames:
        (target / hashlib.sha1(frame.encode()).hexdigest()).write_text(frame)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
