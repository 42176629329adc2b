"""Issue 9 in isolation: kill a trial while its Ray Train run trains, over and over, and see who gives its CPUs back.

Each round starts an actor that stands for a Tune trial (a Tune function is an actor that calls
`TorchTrainer.fit()`), waits for its Train worker's first report, kills the actor as Tune does when ASHA stops a
trial or its node dies, then waits up to --wait-s for Ray alone to free the worker's CPUs. When Ray has not, it
reads what GCS holds (the group, its creator, Ray Train's PlacementGroupCleaner) and lets
`avasr.resources.release_orphaned_placement_groups` free it, so the next round starts on a whole cluster.

    python benchmarks/placement_groups.py --rounds 12
"""

import argparse
import os
import tempfile
import time
from dataclasses import dataclass

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.util.state import list_actors

from avasr.resources import placement_groups, release_orphaned_placement_groups

CLUSTER_CPUS = 2
WORKER_CPUS = 1.98  # all but the trial actor's sliver, as a sweep's one-at-a-time trial
REPORT_EVERY_S = 0.3
START_WITHIN_S = 180


def train_func(config: dict) -> None:
    """Reports forever, touching a file so the driver knows training runs."""
    step = 0
    while True:
        step += 1
        with open(config["mark"], "w") as f:
            f.write(str(step))
        ray.train.report({"step": step})
        time.sleep(REPORT_EVERY_S)


@ray.remote(num_cpus=0.01)
class Trial:
    def fit(self, mark: str, storage: str, name: str) -> None:
        TorchTrainer(train_func, train_loop_config={"mark": mark},
                     scaling_config=ray.train.ScalingConfig(num_workers=1,
                                                            resources_per_worker={"CPU": WORKER_CPUS}),
                     run_config=ray.train.RunConfig(name=name, storage_path=storage)).fit()


@dataclass
class Round:
    index: int
    killed_after_s: float
    freed_by_ray_s: float | None  # None: not within --wait-s
    leaked: str = ""  # what GCS held when Ray had not freed it
    cleaners: str = ""
    released_by_avasr_s: float | None = None


def free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def wait_for_cpus(timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if free_cpus() >= CLUSTER_CPUS - 1e-3:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def one_round(index: int, folder: str, wait_s: float) -> Round:
    mark = os.path.join(folder, f"trial-{index}.step")
    trial = Trial.remote()
    trial.fit.remote(mark, folder, f"trial-{index}")
    started = time.monotonic()
    while not os.path.exists(mark):
        if time.monotonic() - started > START_WITHIN_S:
            raise RuntimeError(f"round {index}: no report within {START_WITHIN_S} s; free CPUs {free_cpus()}")
        time.sleep(0.05)
    result = Round(index, time.monotonic() - started, None)
    ray.kill(trial)  # as Tune does to a stopped trial's actor: its TrainController dies with it
    result.freed_by_ray_s = wait_for_cpus(wait_s)
    if result.freed_by_ray_s is None:
        result.leaked = "; ".join(g.describe() for g in placement_groups() if g.live and g.resources.get("CPU"))
        result.cleaners = ", ".join(f"{a.actor_id[:8]} {a.state}" for a in list_actors(
            filters=[("class_name", "=", "PlacementGroupCleaner")], limit=1000) if a.state == "ALIVE")
        released = time.monotonic()
        release_orphaned_placement_groups()
        freed = wait_for_cpus(wait_s)
        result.released_by_avasr_s = None if freed is None else time.monotonic() - released
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--wait-s", type=float, default=30.0, help="how long Ray alone gets to free the CPUs")
    args = parser.parse_args()
    ray.init(num_cpus=CLUSTER_CPUS)
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        print("| round | killed after s | freed by Ray alone | held then | live cleaners | freed by avasr |")
        print("|---|---|---|---|---|---|")
        for index in range(args.rounds):
            r = one_round(index, folder, args.wait_s)
            rounds.append(r)
            by_ray = "no" if r.freed_by_ray_s is None else f"{r.freed_by_ray_s:.1f} s"
            by_avasr = "" if r.freed_by_ray_s is not None else (
                "no" if r.released_by_avasr_s is None else f"{r.released_by_avasr_s:.1f} s")
            print(f"| {index} | {r.killed_after_s:.1f} | {by_ray} | {r.leaked} | {r.cleaners} | {by_avasr} |",
                  flush=True)
    leaked = [r for r in rounds if r.freed_by_ray_s is None]
    fixed = [r for r in leaked if r.released_by_avasr_s is not None]
    print(f"\nRay alone freed {len(rounds) - len(leaked)}/{len(rounds)} killed trials' CPUs within {args.wait_s:g} s;"
          f" avasr released {len(fixed)}/{len(leaked)} of the rest")
    ray.shutdown()


if __name__ == "__main__":
    main()
