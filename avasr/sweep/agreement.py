"""Do separate sweeps of one space agree? Each verdict claims that some configurations are significantly worse than
its best; two sweeps contradict each other when one says A beats B and the other says B beats A. And each sweep's
champion should be among the tied-best of every other sweep: a champion that another sweep calls significantly
worse was shipped on luck.

Verdicts are read as `Verdict.to_dict()` (the `verdict.json` a sweep keeps), and configurations are matched by
label ("attention"): sweeps in other folders or clones give the same configuration another config_id, since the id
covers the absolute manifest paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avasr.sweep.verdict import VerdictError


@dataclass(frozen=True)
class Claims:
    """What one sweep's verdict says."""

    name: str
    best: str
    labels: frozenset[str]  # every configuration it ranked
    champion: str | None
    tied: frozenset[str]  # the best and every configuration not significantly worse than it
    beats: frozenset[tuple[str, str]]  # (better, worse): the best against each configuration significantly worse

    @classmethod
    def from_verdict(cls, name: str, verdict: dict) -> Claims:
        rows = verdict["configurations"]  # best first
        labels = {row["config_id"]: row["label"] for row in rows}
        best = rows[0]["label"]
        return cls(
            name=name,
            best=best,
            labels=frozenset(labels.values()),
            champion=labels.get(verdict["champion_config_id"]),
            tied=frozenset(row["label"] for row in rows if not row["significantly_worse"]),
            beats=frozenset((best, row["label"]) for row in rows if row["significantly_worse"]),
        )


def read_claims(path: str | Path) -> Claims:
    """A verdict.json -> its Claims, named by its folder (the sweep's name when kept beside the sweep)."""
    path = Path(path)
    try:
        return Claims.from_verdict(path.parent.name, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise VerdictError(f"{path}: not a verdict.json ({e!r})") from None


def contradictions(sweeps: Sequence[Claims]) -> list[str]:
    """Each pair of sweeps where one says A is significantly better than B and the other the reverse."""
    found = []
    for i, one in enumerate(sweeps):
        for other in sweeps[i + 1 :]:
            for better, worse in sorted(one.beats & {(w, b) for b, w in other.beats}):
                found.append(f"{one.name}: {better} beats {worse}; {other.name}: {worse} beats {better}")
    return found


def champions_not_tied(sweeps: Sequence[Claims]) -> list[str]:
    """Each sweep whose champion another sweep (that ranked it) calls significantly worse than its best."""
    found = []
    for one in sweeps:
        for other in sweeps:
            if other is not one and one.champion in other.labels - other.tied:
                found.append(f"{one.name}'s champion {one.champion} is significantly worse than {other.name}'s best")
    return found
