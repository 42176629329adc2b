"""Do sweeps that differ only in their seeds agree? Reads each sweep's verdict.json (kept in the sweep's folder) and
checks the two stability goals: no two sweeps make contradicting significant claims (A significantly better than B
in one, B than A in another), and each sweep's champion is in the tied-best set of every other.

    make sweep SWEEP_ARGS="--seed 42"; make sweep SWEEP_ARGS="--seed 7"; make sweep SWEEP_ARGS="--seed 123"
    python benchmarks/stability.py outputs/sweeps/smoke-*/verdict.json

Exits 1 when a goal is missed. The checks are avasr.sweep.agreement's.
"""

import argparse
import json
import sys
from pathlib import Path

from avasr.sweep.agreement import champions_not_tied, contradictions, read_claims


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verdicts", nargs="+", type=Path, help="verdict.json files, one per sweep (2 or more)")
    args = parser.parse_args()
    if len(args.verdicts) < 2:
        parser.error("give two or more verdict.json files")
    sweeps = [read_claims(path) for path in args.verdicts]
    print(f"{'sweep':<24} {'seeds':<10} {'best':<12} {'champion':<12} {'tied with the best':<36} significantly worse")
    for path, claims in zip(args.verdicts, sweeps):
        seeds = json.loads(path.read_text())["configurations"][0]["seeds"]
        worse = ", ".join(w for _, w in sorted(claims.beats)) or "none"
        print(
            f"{claims.name:<24} {','.join(map(str, sorted(seeds))):<10} {claims.best:<12} {claims.champion or '-':<12} "
            f"{', '.join(sorted(claims.tied)):<36} {worse}"
        )
    contradicting, outside = contradictions(sweeps), champions_not_tied(sweeps)
    for problem in contradicting + outside:
        print(f"  disagree: {problem}")
    claims = "contradicting claims" if contradicting else "no contradicting claims"
    champions = "a champion is significantly worse elsewhere" if outside else "every champion is tied-best everywhere"
    print(f"\n{len(sweeps)} sweeps: {claims}; {champions}")
    return 1 if contradicting or outside else 0


if __name__ == "__main__":
    sys.exit(main())
