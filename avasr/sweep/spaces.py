"""Search spaces: the Tune `param_space` files of tune_spaces/ (or any path), validated before Ray starts.

A space file defines SPACE (Config fields -> fixed values, `tune.grid_search`, `tune.choice`, ranges), optionally
NUM_SAMPLES, SCHEDULER ("asha" or "fifo": the sweep's default when its options name none) and ASHA (scheduler
arguments). Every value a trial could draw goes through `Config.from_dict` here, so an unknown field or fusion is
named with the valid ones before any trial is scheduled.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ray.tune.search.sample import Categorical, Domain, Float, Integer

from avasr.config import Config, ConfigError
from avasr.errors import AvasrError

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"

# Keys a trial's config may carry besides Config fields. FAIL_AT_EPOCH may come from a space (fault injection);
# the others are added by the Tune function for its worker.
FAIL_AT_EPOCH = "fail_at_epoch"
MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY = "mlflow_uri", "mlflow_run_id", "torch_threads"
SWEEP_ONLY_KEYS = (FAIL_AT_EPOCH, MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY)
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


def fixed_values(param_space: dict) -> dict:
    """The Config fields a space does not vary (what the driver can know before trials are drawn)."""

    def varies(value) -> bool:
        return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)

    return {k: v for k, v in param_space.items() if k not in SWEEP_ONLY_KEYS and not varies(v)}


def split_trial_config(config: dict) -> tuple[Config, dict]:
    """A trial's dict -> (Config, the sweep-only keys)."""
    sweep = {k: config[k] for k in SWEEP_ONLY_KEYS if k in config}
    return Config.from_dict({k: v for k, v in config.items() if k not in SWEEP_ONLY_KEYS}), sweep
