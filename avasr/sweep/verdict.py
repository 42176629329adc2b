"""The sweep's verdict: which configuration is best, how sure we are, and which one to ship.

    configurations   trials grouped by configuration (everything but the seed), with their val errors as Scores
    decide           mean val WER per configuration with its 95 % CI, each compared with the best (Holm), the
                     tied-best set, and the champion: by default the cheapest to deploy among the tied-best
    Verdict          .sentence() for people, .markdown() and .to_dict() for the parent run, plot_verdict()

A configuration's WER is the mean over its seeds of each seed's corpus WER on the val set (the training speakers'
held-out utterances, never the test speakers); intervals and tests come from avasr.sweep.significance, on the
per-utterance errors each trial's finalisation wrote. The champion rule:

- `deployment` (default): among the configurations not significantly worse than the best, and within the
  parameter and latency budgets, the one with the lowest CPU latency p50, then the fewest parameters. Latencies
  within LATENCY_RESOLUTION of the fastest count as equal: a p50 of about 1 ms moves by 5-10 % from one
  measurement to the next, and parameters then decide. Latency and size belong to the architecture: one
  measurement per configuration.
- `accuracy`: the lowest mean val WER within the budgets, as a sweep of one seed per configuration always did.

The trial shipped is the champion configuration's seed with the lowest val WER.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avasr.corpus.splits import SHORT_NAMES
from avasr.errors import AvasrError, OutputError
from avasr.plots import save_figure
from avasr.sweep.champion import TrialSummary, comparable, split_metric
from avasr.sweep.significance import ALPHA, Interval, Row, Scores, compare_to_best, wer_interval

PREFERENCES = ("deployment", "accuracy")
MIN_SPEAKERS = 2  # below this the val set's utterances, not its speakers, are resampled
LATENCY_RESOLUTION = 0.10  # latencies within 10 % of the fastest count as equal for deployment
# The WER of a model that emits nothing (every word deleted). An interval reaching past it bounds nothing a user can
# act on (two seeds that disagree give a t quantile of 12.7): tables print its top as ">1", plots cut its bar there.
BLANK_MODEL_WER = 1.0
VERDICT_MD, VERDICT_JSON, VERDICT_PLOT = "verdict.md", "verdict.json", "verdict.png"


class VerdictError(AvasrError, ValueError):
    """No verdict can be given: no finished trial, or trials whose errors do not line up."""


@dataclass(frozen=True)
class Configuration:
    """One configuration's finished trials (one per seed) and what they measured together."""

    config_id: str
    label: str  # what sets it apart from the sweep's other configurations, e.g. "attention"
    trials: tuple[TrialSummary, ...]  # finished, best val WER first
    interval: Interval  # mean val WER over seeds, 95 % CI
    row: Row  # its comparison with the best configuration
    param_count: int
    latency_p50_ms: float
    test_wer: float  # mean over seeds on the unseen test speakers (shown, never used to choose); nan without one
    split_wers: dict[str, float] = field(default_factory=dict)  # the same on each of the corpus's other test splits

    @property
    def seeds(self) -> int:
        return len(self.trials)

    @property
    def significantly_worse(self) -> bool:
        return self.row.significantly_worse


@dataclass(frozen=True)
class Verdict:
    configurations: tuple[Configuration, ...]  # best mean val WER first
    champion: Configuration | None  # None: nothing within the budgets
    shipped: TrialSummary | None  # the champion's best seed
    prefer: str
    alpha: float
    notes: tuple[str, ...] = ()  # caveats the sentence carries (e.g. a val set of one speaker)

    @property
    def best(self) -> Configuration:
        return self.configurations[0]

    @property
    def tied(self) -> tuple[Configuration, ...]:
        return tuple(c for c in self.configurations if not c.significantly_worse)

    @property
    def split_names(self) -> list[str]:
        """The other test splits the trials were measured on (e.g. unseen voices, unseen faces), in order."""
        return list(dict.fromkeys(name for c in self.configurations for name in c.split_wers))

    def _split_cells(self, c: Configuration) -> list[float]:
        return [c.split_wers.get(name, math.nan) for name in self.split_names]

    @property
    def seed_variance_measured(self) -> bool:
        return all(c.seeds > 1 for c in self.configurations)

    def sentence(self) -> str:
        """One plain paragraph a user can act on."""
        best, others = self.best, self.configurations[1:]
        text = (
            f"{best.label} is best (val WER {best.interval.estimate:.3f}, 95 % CI {_ci(best.interval)}, "
            f"{_count(best.seeds, 'seed')})"
        )
        tied = [c for c in others if not c.significantly_worse]
        worse = [c for c in others if c.significantly_worse]
        if tied:
            text += f"; {_names(tied)} {'is' if len(tied) == 1 else 'are'} not significantly worse ({_ps(tied)})"
            text += f", but a true difference under {_hidden(tied):.3f} can hide in that tie"
        if worse:
            text += f"; {_names(worse)} {'is' if len(worse) == 1 else 'are'} ({_ps(worse)})"
        text += "."
        for note in self.notes:
            text += f" {note}"
        if not self.seed_variance_measured:
            text += (
                " Seed-to-seed variation was not measured (one seed per configuration): the intervals cover the"
                " val speakers and utterances only; pass --seeds 2 or more."
            )
        return text + " " + self.shipping_sentence()

    def shipping_sentence(self) -> str:
        champion, best = self.champion, self.best
        if champion is None:
            return "Nothing to ship: no configuration is within the parameter and latency budgets."
        if champion is best or self.prefer == "accuracy":
            return f"Shipping {champion.label}: the lowest val WER within the budgets."
        fewer = 1 - champion.param_count / best.param_count if best.param_count else 0.0
        faster = best.latency_p50_ms - champion.latency_p50_ms  # ms; negative when the champion is slower
        if fewer > 0:
            size = f"{fewer:.0%} fewer parameters"
        elif fewer < 0:
            size = f"{-fewer:.0%} more parameters"
        else:
            size = "as many parameters"
        if abs(faster) <= LATENCY_RESOLUTION * best.latency_p50_ms:  # inside the resolution: no speed claim
            speed = f"as fast (p50 within {LATENCY_RESOLUTION:.0%})"
        else:
            speed = f"{abs(faster):.1f} ms {'faster' if faster > 0 else 'slower'}"
        return f"Shipping {champion.label}: tied on WER, {size}, {speed}."

    def markdown(self) -> str:
        splits = "".join(f" {SHORT_NAMES.get(n, n)} WER |" for n in self.split_names)
        header = (
            f"| | configuration | seeds | val WER | 95 % CI | vs best | p (Holm) |{splits} test WER | params | p50 ms |"
        )
        lines = [header, "|---" * (10 + len(self.split_names)) + "|"]
        for c in self.configurations:
            mark = "**champion**" if c is self.champion else ""
            verdict = "best" if c is self.best else "worse" if c.significantly_worse else "tied"
            p = "" if c.row.p_holm is None else _p(c.row.p_holm)
            lines.append(
                f"| {mark} | {c.label} | {c.seeds} | {c.interval.estimate:.3f} | {_ci(c.interval)} | {verdict} | {p} |"
                f"{''.join(f' {w:.3f} |' for w in self._split_cells(c))} "
                f"{c.test_wer:.3f} | {c.param_count:,} | "
                f"{c.latency_p50_ms:.1f} |"
            )
        return "\n".join(["# Verdict", "", self.sentence(), "", *lines, ""])

    def to_dict(self) -> dict:
        return {
            "sentence": self.sentence(),
            "prefer": self.prefer,
            "alpha": self.alpha,
            "seed_variance_measured": self.seed_variance_measured,
            "champion_config_id": self.champion.config_id if self.champion else None,
            "shipped_run_id": self.shipped.run_id if self.shipped else None,
            "configurations": [
                {
                    "config_id": c.config_id,
                    "label": c.label,
                    "seeds": [t.seed for t in c.trials],
                    "run_ids": [t.run_id for t in c.trials],
                    "val_wers": [t.val_wer for t in c.trials],
                    "val_wer": c.interval.estimate,
                    "ci": [c.interval.low, c.interval.high],
                    "difference_from_best": c.row.difference,
                    "p_value": c.row.p_value,
                    "p_holm": c.row.p_holm,
                    "significantly_worse": c.significantly_worse,
                    "detectable_difference": c.row.detectable,
                    "test_wer": c.test_wer,
                    **{split_metric(name): wer for name, wer in c.split_wers.items()},
                    "param_count": c.param_count,
                    "cpu_latency_ms_p50": c.latency_p50_ms,
                }
                for c in self.configurations
            ],
        }

    def save(self, folder: str | Path) -> Path:
        """VERDICT_MD and VERDICT_JSON into `folder` (the sweep's own, beside its errors); returns the JSON's path."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / VERDICT_MD).write_text(self.markdown(), encoding="utf-8")
            (folder / VERDICT_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"{folder}: cannot write the verdict: {e}") from None
        return folder / VERDICT_JSON

    def table(self) -> str:
        """The configurations as text, best first: what the sweep prints."""
        splits = "".join(f" {SHORT_NAMES.get(n, n).split()[-1] + ' WER':>9}" for n in self.split_names)
        head = (
            f"{'':2} {'configuration':<24} {'seeds':>5} {'val WER':>7} {'95 % CI':>13} {'vs best':>8}{splits} "
            f"{'test WER':>8} {'params':>9} {'p50 ms':>7}"
        )
        lines = [head, "-" * len(head)]
        for c in self.configurations:
            mark = "*" if c is self.champion else ""
            verdict = "best" if c is self.best else f"p={_p(c.row.p_holm)}" if c.row.p_holm is not None else ""
            verdict = ("worse " if c.significantly_worse else "tied ") + verdict if c is not self.best else verdict
            lines.append(
                f"{mark:2} {c.label[:24]:<24} {c.seeds:>5} {c.interval.estimate:>7.3f} "
                f"{_ci(c.interval):>13} {verdict:>8}"
                f"{''.join(f' {w:>9.3f}' for w in self._split_cells(c))} {c.test_wer:>8.3f} "
                f"{c.param_count:>9,} {c.latency_p50_ms:>7.1f}"
            )
        lines.append(
            "*: shipped. tied / worse: not / significantly worse than the best (paired speaker-blocked test over "
            f"val utterances and seeds, Holm-corrected, alpha {self.alpha:g})"
            + ". WERs on test splits are shown, never used to choose."
            + (UNBOUNDED_NOTE if any(_past_blank(c.interval) for c in self.configurations) else "")
        )
        return "\n".join(lines)


# --- from trials to a verdict --------------------------------------------------------------------------------------
def read_errors(path: str | Path) -> dict[str, tuple[str, int, int]]:
    """A trial's per-utterance error file -> {utterance: (speaker, ref_words, word_errors)}."""
    try:
        with Path(path).open(newline="") as f:
            return {
                row["utterance"]: (row["speaker"], int(row["ref_words"]), int(row["word_errors"]))
                for row in csv.DictReader(f)
            }
    except (OSError, KeyError, ValueError) as e:
        raise VerdictError(f"{path}: not a per-utterance error file ({e})") from None


def scores_of(
    errors: Sequence[dict[str, tuple[str, int, int]]], where: str, seed_ids: Sequence[int] | None = None
) -> Scores:
    """The seeds of one configuration (trained with `seed_ids`, in the same order) as Scores on the utterances in
    the first seed's order; every seed must have been scored on the same utterances. A val set of one speaker has
    no speakers to resample: its utterances are then the blocks (see Verdict.notes)."""
    utterances = list(errors[0])
    for seed_errors in errors[1:]:
        if set(seed_errors) != set(utterances):
            raise VerdictError(f"{where}: its seeds were scored on different val utterances")
    speakers = np.array([errors[0][u][0] for u in utterances])
    if len(set(speakers)) < MIN_SPEAKERS:
        speakers = np.array(utterances)
    words = np.array([errors[0][u][1] for u in utterances])
    table = np.array([[seed_errors[u][2] for u in utterances] for seed_errors in errors])  # (S, U)
    return Scores(table, words, speakers, None if seed_ids is None else np.asarray(seed_ids))


def trial_scores(trials: Sequence[TrialSummary], errors: dict[str, dict], where: str) -> Scores:
    """`scores_of` the trials of one configuration, from `errors` (run id -> that trial's val errors), with their
    seeds."""
    return scores_of([errors[t.run_id] for t in trials], where, [t.seed for t in trials])


def labels(groups: dict[str, list[TrialSummary]]) -> dict[str, str]:
    """Each configuration named by what sets it apart: its fusion, with dropout and lr when those vary too."""
    firsts = {cid: trials[0] for cid, trials in groups.items()}
    varying = [k for k in ("fusion", "dropout", "lr") if len({getattr(t, k) for t in firsts.values()}) > 1]
    varying = varying or ["fusion"]
    named = {}
    for cid, t in firsts.items():
        parts = [t.fusion if k == "fusion" else f"{k}={getattr(t, k):.3g}" for k in varying]
        named[cid] = " ".join(parts)
    if len(set(named.values())) < len(named):  # configurations that differ elsewhere: add their ids
        named = {cid: f"{name} [{cid}]" for cid, name in named.items()}
    return named


def group(trials: Sequence[TrialSummary]) -> dict[str, list[TrialSummary]]:
    """Finished trials with a val WER, by configuration (in order of first appearance), best seed first."""
    groups: dict[str, list[TrialSummary]] = {}
    for t in trials:
        if t.status == "FINISHED" and math.isfinite(t.val_wer):
            groups.setdefault(t.config_id, []).append(t)
    return {cid: sorted(ts, key=lambda t: (t.val_wer, t.seed)) for cid, ts in groups.items()}


def decide(
    trials: Sequence[TrialSummary],
    errors: dict[str, dict[str, tuple[str, int, int]]],
    *,
    prefer: str = "deployment",
    max_params: int,
    max_latency_ms: float,
    alpha: float = ALPHA,
) -> Verdict:
    """The verdict on `trials` from `errors` (run id -> that trial's val errors, see read_errors). Trials without
    errors (an older sweep's) are left out."""
    if prefer not in PREFERENCES:
        raise VerdictError(f"unknown preference {prefer!r}: choose from {', '.join(PREFERENCES)}")
    groups = {
        cid: [t for t in ts if t.run_id in errors] for cid, ts in group(trials).items()
    }  # a trial whose errors are missing cannot be compared
    groups = {cid: ts for cid, ts in groups.items() if ts}
    if not groups:
        raise VerdictError("no finished trial with per-utterance val errors: nothing to compare")
    names = labels(groups)
    scores = {cid: trial_scores(ts, errors, names[cid]) for cid, ts in groups.items()}
    rows = {row.name: row for row in compare_to_best(scores, alpha=alpha)}
    configurations = tuple(
        sorted(
            (configuration(cid, names[cid], ts, wer_interval(scores[cid]), rows[cid]) for cid, ts in groups.items()),
            key=lambda c: (c.interval.estimate, c.config_id),
        )
    )
    within = [
        c
        for c in configurations
        if c.param_count < max_params and c.latency_p50_ms <= max_latency_ms and math.isfinite(c.latency_p50_ms)
    ]
    if prefer == "deployment":
        champion = cheapest([c for c in within if not c.significantly_worse] or within)
    else:
        champion = within[0] if within else None
    shipped = next((t for t in champion.trials if comparable(t)), champion.trials[0]) if champion else None
    speakers = {errors[t.run_id][u][0] for ts in groups.values() for t in ts[:1] for u in errors[t.run_id]}
    notes = ()
    if len(speakers) < MIN_SPEAKERS:
        notes = (
            "The val set has one speaker: its utterances were resampled as if independent, so the intervals are "
            "too narrow for new speakers.",
        )
    return Verdict(configurations, champion, shipped, prefer, alpha, notes)


def cheapest(candidates: Sequence[Configuration]) -> Configuration | None:
    """The fewest parameters among those as fast as the fastest (within LATENCY_RESOLUTION), then the lowest val
    WER: as fast and as large is no cheaper, and a lower WER is worth having; None without candidates."""
    if not candidates:
        return None
    fastest = min(c.latency_p50_ms for c in candidates)
    as_fast = [c for c in candidates if c.latency_p50_ms <= fastest * (1 + LATENCY_RESOLUTION)]
    return min(as_fast, key=lambda c: (c.param_count, c.interval.estimate, c.latency_p50_ms))


def configuration(cid: str, label: str, trials: list[TrialSummary], interval: Interval, row: Row) -> Configuration:
    """Size and latency from the seed that measured them (one per configuration; the others carry a copy)."""
    measured = [t for t in trials if math.isfinite(t.latency_p50_ms)]
    tests = [t.test_wer for t in trials if math.isfinite(t.test_wer)]
    splits: dict[str, list[float]] = {}
    for t in trials:
        for name, wer in t.split_wers:
            splits.setdefault(name, []).append(wer)
    return Configuration(
        config_id=cid,
        label=label,
        trials=tuple(trials),
        interval=interval,
        row=row,
        param_count=trials[0].param_count,
        latency_p50_ms=measured[0].latency_p50_ms if measured else math.nan,
        test_wer=float(np.mean(tests)) if tests else math.nan,
        split_wers={name: float(np.mean(wers)) for name, wers in splits.items()},
    )


def plot_verdict(verdict: Verdict, path: str | Path, title: str) -> Path:
    """Val WER per configuration, best first: its mean and 95 % CI as a bar, one dot per seed; the champion in
    red, configurations significantly worse than the best in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 * len(verdict.configurations) + 2), 4), constrained_layout=True)
    for x, c in enumerate(verdict.configurations):
        colour = "red" if c is verdict.champion else "grey" if c.significantly_worse else "C0"
        estimate = c.interval.estimate
        axes.errorbar([x], [estimate], yerr=_error_bar(c.interval), fmt="o", color=colour, capsize=6, markersize=8)
        _mark_cut(axes, x, c.interval, colour)
        jitter = np.linspace(-0.12, 0.12, len(c.trials)) if len(c.trials) > 1 else [0.0]
        axes.scatter(x + np.asarray(jitter), [t.val_wer for t in c.trials], s=14, color="black", zorder=3)
    axes.set_xticks(range(len(verdict.configurations)), [c.label for c in verdict.configurations], rotation=15)
    axes.set(ylabel="val WER (mean over seeds, 95 % CI; dots: seeds)", title=title)
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def configuration_front(verdict: Verdict) -> list[Configuration]:
    """The configurations no other one beats on mean val WER, CPU latency p50 and parameters at once (the front of
    configuration means, not of single lucky seeds), best WER first."""

    def objectives(c: Configuration) -> tuple[float, float, int]:
        return c.interval.estimate, c.latency_p50_ms, c.param_count

    def dominates(a: Configuration, b: Configuration) -> bool:
        pairs = list(zip(objectives(a), objectives(b), strict=True))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    shown = [c for c in verdict.configurations if math.isfinite(c.latency_p50_ms)]
    return sorted((c for c in shown if not any(dominates(o, c) for o in shown)), key=objectives)


def plot_front(verdict: Verdict, path: str | Path, title: str) -> Path:
    """Mean val WER (95 % CI bars) against CPU latency p50, one point per configuration: the front's members
    crossed, the champion ringed, configurations significantly worse than the best in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = {c.config_id for c in configuration_front(verdict)}
    figure, axes = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for index, c in enumerate(verdict.configurations):
        if not math.isfinite(c.latency_p50_ms):
            continue
        estimate = c.interval.estimate
        colour = "grey" if c.significantly_worse else f"C{index}"
        axes.errorbar(
            [c.latency_p50_ms],
            [estimate],
            yerr=_error_bar(c.interval),
            fmt="x" if c.config_id in front else "o",
            color=colour,
            capsize=5,
            markersize=9,
            label=f"{c.label} ({c.param_count:,} params)",
        )
        _mark_cut(axes, c.latency_p50_ms, c.interval, colour)
        if c is verdict.champion:
            axes.scatter([c.latency_p50_ms], [estimate], s=300, facecolors="none", edgecolors="red", linewidths=1.5)
    axes.set(
        xlabel="CPU latency p50 (ms, ONNX Runtime, batch 1, 5 s input)",
        ylabel="val WER (mean over seeds, 95 % CI)",
        title=f"{title}\nx: Pareto front of configuration means; red ring: shipped",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


UNBOUNDED_NOTE = (
    " A CI up to >1 passes a blank model's WER: that configuration's seeds disagree more than so few seeds can bound;"
    " run more seeds."
)


def _ci(interval: Interval) -> str:
    """ "low-high", with a top beyond a blank model's WER written ">1" (the numbers stay exact in verdict.json)."""
    high = ">1" if _past_blank(interval) else f"{interval.high:.3f}"
    return f"{interval.low:.3f}-{high}"


def _past_blank(interval: Interval) -> bool:
    return interval.high > BLANK_MODEL_WER


def _bar_top(interval: Interval) -> float:
    """Where a plot's CI bar ends: its top, cut at a blank model's WER (or the estimate, were that higher)."""
    return min(interval.high, max(BLANK_MODEL_WER, interval.estimate))


def _error_bar(interval: Interval) -> list[list[float]]:
    """matplotlib's yerr for one point: [[below], [above]]."""
    return [[interval.estimate - interval.low], [_bar_top(interval) - interval.estimate]]


def _mark_cut(axes, x: float, interval: Interval, colour: str) -> None:
    """An arrowhead on a bar cut at a blank model's WER: the interval goes on beyond the plot."""
    if interval.high > _bar_top(interval):
        axes.scatter([x], [_bar_top(interval)], marker="^", s=60, color=colour, zorder=3)


def _hidden(tied: Sequence[Configuration]) -> float:
    """The largest difference from the best that the tied configurations' comparisons detect only 4 times in 5."""
    return max(c.row.detectable for c in tied)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(configurations: Sequence[Configuration]) -> str:
    names = [c.label for c in configurations]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def _ps(configurations: Sequence[Configuration]) -> str:
    """ "p = 0.21, 0.09", "p < 0.001", "p = 0.21, < 0.001": Holm-adjusted."""
    values = [_p(c.row.p_holm) for c in configurations]
    first = values[0] if values[0].startswith("<") else f"= {values[0]}"
    return ", ".join([f"p {first}", *values[1:]])
