"""Disjoint seed ranges of the micro-world: what each seed may be used for.

Models are trained on ``train`` seeds only, choices (checkpoints, thresholds, prompts) are made
on ``validation`` seeds, the tables in ``docs/`` are measured on ``test`` seeds, and
``benchmark`` is what ``mira-bench`` draws from by default. A seed names one generated case
(scene plus edits); ranges never overlap, so no test case can leak into training.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Split", "SPLITS", "SEED_RANGES", "split_of", "seeds"]

Split = Literal["benchmark", "validation", "test", "train"]
SPLITS: tuple[Split, ...] = ("benchmark", "validation", "test", "train")

#: Half-open seed ranges [start, stop). Train is far larger than the evaluation ranges.
SEED_RANGES: dict[Split, range] = {
    "benchmark": range(0, 100_000),
    "validation": range(100_000, 200_000),
    "test": range(200_000, 300_000),
    "train": range(1_000_000, 2**31 - 1),
}


def split_of(seed: int) -> Split:
    """The split a seed belongs to; ``ValueError`` for a seed in no range."""
    for name, rng in SEED_RANGES.items():
        if seed in rng:
            return name
    raise ValueError(
        f"seed {seed!r} lies in no split; ranges: "
        f"{ {k: (r.start, r.stop) for k, r in SEED_RANGES.items()} }"
    )


def seeds(split: Split, n: int, *, offset: int = 0) -> range:
    """The first ``n`` seeds of ``split`` after skipping ``offset``."""
    if split not in SEED_RANGES:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got n={n!r}, offset={offset!r}")
    rng = SEED_RANGES[split]
    start = rng.start + offset
    if start + n > rng.stop:
        raise ValueError(f"split {split!r} has {len(rng)} seeds; asked for {n} after {offset}")
    return range(start, start + n)
