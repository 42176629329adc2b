"""Search spaces: the Tune `param_space` files of tune_spaces/ (or any path), validated before Ray starts.

A space file defines SPACE (Config fields -> fixed values, `tune.grid_search`, `tune.choice`, ranges), optionally
NUM_SAMPLES, SEEDS (training seeds per configuration), SCHEDULER ("asha" or "fifo": the sweep's default when its
options name none) and ASHA (scheduler arguments). Every value a trial could draw goes through `Config.from_dict`
here, so an unknown field or fusion is named with the valid ones before any trial is scheduled.

A configuration is one point of the space: every grid value crossed with NUM_SAMPLES draws of the random entries.
The driver draws them once, with a seed of its own (`configurations`), so that each configuration can be trained
with several training seeds (`trial_variants`): Tune would redraw a random entry for every trial. A configuration's
id hashes everything but the seed; trials of one configuration share it and differ only in `seed`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from avasr.config import Config, ConfigError
from avasr.errors import AvasrError

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"

# Keys a trial's config may carry besides Config fields. FAIL_AT_EPOCH may come from a space (fault injection);
# the others are added by the Tune function for its worker.
FAIL_AT_EPOCH = "fail_at_epoch"
MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY = "mlflow_uri", "mlflow_run_id", "torch_threads"
CONFIG_ID_KEY = "config_id"  # the configuration a trial trains (all but the seed), a short hash
CONFIG_LABEL_KEY = "configuration"  # the same for people: its varying values, e.g. "fusion=attention"
VARIANT_KEY = "variant"  # in Tune's param space: the grid of (configuration, seed) dicts, flattened by the trial
SWEEP_ONLY_KEYS = (FAIL_AT_EPOCH, MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY, CONFIG_ID_KEY, CONFIG_LABEL_KEY)
CONFIG_ID_CHARS = 8
SET_BY_SWEEP = ("train_manifest", "val_manifest", "output_dir", "cache_dir")
SCHEDULERS = ("asha", "fifo")
DEFAULT_SCHEDULER = "asha"


class SpaceError(AvasrError, ValueError):
    """A space file that cannot be loaded, or a value in it that no trial could train with."""


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    space: dict
    num_samples: int = 1
    asha: dict = field(default_factory=dict)
    scheduler: str = DEFAULT_SCHEDULER
    seeds: int = 1  # training seeds per configuration


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.py") if not p.stem.startswith("_"))


def space_path(name_or_path: str) -> Path:
    """A name of tune_spaces/ or a path to a .py file; an unknown name lists the valid ones."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise SpaceError(f"{candidate}: no such space file")
        return candidate.resolve()
    path = SPACES_DIR / f"{name_or_path}.py"
    if not path.is_file():
        raise SpaceError(
            f"unknown space {name_or_path!r}: choose from {', '.join(available_spaces())} "
            f"(files in {SPACES_DIR}) or give a path to a space file"
        )
    return path


def load_space(name_or_path: str) -> SearchSpace:
    """Import a space file by path (tune_spaces/ is not an installed package) and validate every value in it."""
    path = space_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"avasr_space_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a space is user code: say which file broke
        raise SpaceError(f"{path}: cannot load the space: {type(e).__name__}: {e}") from e
    if not isinstance(getattr(module, "SPACE", None), dict):
        raise SpaceError(f"{path}: a space file must define SPACE = {{...}} (see tune_spaces/__init__.py)")
    space = SearchSpace(
        path,
        dict(module.SPACE),
        int(getattr(module, "NUM_SAMPLES", 1)),
        dict(getattr(module, "ASHA", {})),
        getattr(module, "SCHEDULER", DEFAULT_SCHEDULER),
        int(getattr(module, "SEEDS", 1)),
    )
    validate_space(space)
    return space


def candidate_values(value) -> list:
    """Representative values of a space entry: every grid or choice value, both bounds of a range."""
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, (Float, Integer)):
        return [value.lower, value.upper]
    if isinstance(value, Domain):
        return []  # sample_from and the like: only Ray can draw them
    return [value]


def validate_space(space: SearchSpace) -> None:
    """Every candidate value through Config.from_dict: unknown fields and fusions are named with the valid ones."""
    where = space.path
    fields = {k: v for k, v in space.space.items() if k not in SWEEP_ONLY_KEYS}
    owned = sorted(set(fields) & set(SET_BY_SWEEP))
    if owned:
        raise SpaceError(f"{where}: {', '.join(owned)} are set by the sweep (its options), not by a space")
    if "epochs" in fields and candidate_values(fields["epochs"]) != [fields["epochs"]]:
        raise SpaceError(f"{where}: epochs must be a fixed number (ASHA stops trials within it)")
    candidates = {k: candidate_values(v) for k, v in fields.items()}
    base = {k: values[0] for k, values in candidates.items() if values}
    for key, values in candidates.items():
        for value in values:
            try:
                Config.from_dict({**base, key: value})
            except ConfigError as e:
                raise SpaceError(f"{where}: {e}") from None
    if space.scheduler not in SCHEDULERS:
        raise SpaceError(f"{where}: SCHEDULER={space.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if space.num_samples < 1:
        raise SpaceError(f"{where}: NUM_SAMPLES must be at least 1, got {space.num_samples}")
    if space.seeds < 1:
        raise SpaceError(f"{where}: SEEDS must be at least 1, got {space.seeds}")
    if "seed" in fields:
        raise SpaceError(f"{where}: seed is set by the sweep (--seed, and SEEDS or --seeds for repeats)")


def fixed_values(param_space: dict) -> dict:
    """The Config fields a space does not vary (what the driver can know before trials are drawn)."""

    return {k: v for k, v in param_space.items() if k not in SWEEP_ONLY_KEYS and not varies(v)}


def split_trial_config(config: dict) -> tuple[Config, dict]:
    """A trial's dict (its variant flattened into it) -> (Config, the sweep-only keys)."""
    config = {**{k: v for k, v in config.items() if k != VARIANT_KEY}, **config.get(VARIANT_KEY, {})}
    sweep = {k: config[k] for k in SWEEP_ONLY_KEYS if k in config}
    return Config.from_dict({k: v for k, v in config.items() if k not in SWEEP_ONLY_KEYS}), sweep


# --- configurations and their seeds ------------------------------------------------------------------------------
def varies(value) -> bool:
    return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)


def config_id(values: dict) -> str:
    """A configuration's short id: a hash of its values (JSON, sorted keys), never of its seed."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "seed"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:CONFIG_ID_CHARS]


def configurations(space: dict, num_samples: int, draw_seed: int) -> list[dict]:
    """The varying part of each configuration: every grid combination (in the space's order) crossed with
    `num_samples` draws of the random entries, drawn with `draw_seed` (the same list on every call)."""
    varying = {k: v for k, v in space.items() if k not in SWEEP_ONLY_KEYS and varies(v)}
    grids = {k: v["grid_search"] for k, v in varying.items() if isinstance(v, dict)}
    domains = {k: v for k, v in varying.items() if isinstance(v, Domain)}
    rng = np.random.default_rng(draw_seed)
    found: dict[str, dict] = {}  # identical points (a grid listing a value twice) are one configuration
    for combination in itertools.product(*grids.values()):
        for _ in range(num_samples):
            drawn = {k: _plain(d.sample(random_state=rng)) for k, d in domains.items()}
            values = {**dict(zip(grids, combination)), **drawn}
            found.setdefault(config_id(values), values)
    return list(found.values())


def trial_variants(fixed: dict, varying: list[dict], seeds: int, first_seed: int) -> list[dict]:
    """One dict per trial: each configuration (fixed values + its varying ones, with its id) with each of the
    seeds first_seed, first_seed + 1, ... Seeds outermost: a sweep stopped early has every configuration's first
    seeds rather than all seeds of the first configurations."""
    variants = []
    for seed in range(first_seed, first_seed + seeds):
        for values in varying:
            variants.append(
                {
                    **values,
                    "seed": seed,
                    CONFIG_ID_KEY: config_id({**fixed, **values}),
                    CONFIG_LABEL_KEY: config_label(values),
                }
            )
    return variants


def config_label(values: dict) -> str:
    """A configuration's varying values as a short text: "fusion=attention dropout=0.21"."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "fixed"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
