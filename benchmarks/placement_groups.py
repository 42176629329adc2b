"""The placement-group leak avasr.sweep.resources guards against, in isolation: kill a trial while its Ray Train run
trains, over and over, and see who gives its CPUs back.

Each round starts an actor that stands for a Tune trial (a Tune function is an actor that calls
`TorchTrainer.fit()`), waits for its Train worker's first report, kills the actor as Tune does when ASHA stops a
trial or its node dies, then waits up to --wait-s for Ray alone to free the worker's CPUs. When Ray has not, it
prints what GCS holds (the group, its creator, Ray Train's PlacementGroupCleaner actors) and lets
`avasr.sweep.resources.release_orphaned_placement_groups` free it, so the next round starts on a whole cluster.

    python benchmarks/placement_groups.py --rounds 12
"""

import argparse
import os
import tempfile
import time

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.util.state import list_actors

from avasr.sweep.resources import placement_groups, release_orphaned_placement_groups

CLUSTER_CPUS = 2
WORKER_CPUS = 1.98  # all but the trial actor's sliver, as a sweep's one-at-a-time trial
REPORT_EVERY_S = 0.3
START_WITHIN_S = 180
FOLDER = tempfile.mkdtemp(prefix="avasr-pg-")  # Train runs and the workers' step files


def train_func(config: dict) -> None:
    """Reports forever, touching a file so the driver knows training runs."""
    step = 0
    while True:
        step += 1
        with open(os.path.join(FOLDER, f"r{config['round']}"), "w") as f:
            f.write(str(step))
        ray.train.report({"step": step})
        time.sleep(REPORT_EVERY_S)


@ray.remote(num_cpus=0.01)
class Trial:
    def run(self, round_: int) -> None:
        TorchTrainer(
            train_func,
            train_loop_config={"round": round_},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": WORKER_CPUS}),
            run_config=ray.train.RunConfig(name=f"r{round_}", storage_path=FOLDER),
        ).fit()


def wait_for_cpus(timeout_s: float) -> float | None:
    """Seconds until every CPU is free again; None when not within timeout_s."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if ray.available_resources().get("CPU", 0.0) >= CLUSTER_CPUS - 1e-3:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--wait-s", type=float, default=30.0, help="how long Ray alone gets to free the CPUs")
    args = parser.parse_args()
    ray.init(num_cpus=CLUSTER_CPUS)
    print("| round | killed after s | freed by Ray alone | held then | live cleaners | freed by avasr |")
    print("|---|---|---|---|---|---|")
    leaks = released = 0
    futures = []  # held, as Tune holds its trials' futures
    for round_ in range(args.rounds):
        trial = Trial.remote()
        futures.append(trial.run.remote(round_))
        started = time.monotonic()
        while not os.path.exists(os.path.join(FOLDER, f"r{round_}")):
            if time.monotonic() - started > START_WITHIN_S:
                raise SystemExit(f"round {round_}: no report within {START_WITHIN_S} s")
            time.sleep(0.1)
        killed_after = time.monotonic() - started
        ray.kill(trial)  # as Tune kills a stopped trial's actor: its TrainController dies with it
        by_ray = wait_for_cpus(args.wait_s)
        held = cleaners = by_avasr = ""
        if by_ray is None:
            leaks += 1
            held = "; ".join(g.describe() for g in placement_groups() if g.live and g.resources.get("CPU"))
            cleaners = ", ".join(
                f"{a.actor_id[:8]} {a.state}"
                for a in list_actors(filters=[("class_name", "=", "PlacementGroupCleaner")], limit=1000)
                if a.state == "ALIVE"
            )
            release_orphaned_placement_groups()
            freed = wait_for_cpus(args.wait_s)
            released += freed is not None
            by_avasr = "no" if freed is None else f"{freed:.1f} s"
        print(
            f"| {round_} | {killed_after:.1f} | {'no' if by_ray is None else f'{by_ray:.1f} s'} | {held} | "
            f"{cleaners} | {by_avasr} |",
            flush=True,
        )
    print(
        f"\nRay alone freed {args.rounds - leaks}/{args.rounds} killed trials' CPUs within {args.wait_s:g} s; "
        f"avasr released {released}/{leaks} of the rest"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
