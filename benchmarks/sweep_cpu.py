"""Where a sweep's CPU time goes, process by process: the trials' training, the helper processes Ray Tune and Ray
Train start for every trial, Ray's own daemons, the driver. On a 2-core machine the smoke sweep keeps both cores
busy, so only less CPU work makes it faster; this shows which work there is.

Runs `experiments/sweep_fusion.py` as a user does (its flags after `--`) and reads every process's CPU time from
/proc (Linux) once a second while it runs. Prints, per role, the processes, CPU seconds, their share, and for the
per-trial roles the CPU per trial and per second of the process's life (what an idle helper costs while its
trial trains). A process's last second before it exits is not seen (at most a second of CPU each).

It also keeps every second's CPU per role (timeline.csv) and plots the cores each group of roles used over time
(cpu_over_time.png): start-up, the waves of trials, the gaps between trials, finalising. Over the seconds in which
the Train workers trained it prints what else used the cores: on a busy machine training waits for each of those
core-seconds.

    python benchmarks/sweep_cpu.py [--epochs N] [--out outputs/sweep_cpu] [-- --seed 123 ...]
    python benchmarks/sweep_cpu.py --out outputs/sweep_cpu --again     # report and plot again from processes.csv

--epochs N: the smoke space with N epochs (its other values unchanged): a short run shows what starting a trial
costs, a full one (default: the space's own) what the helpers cost while trials train.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_S = 1.0
TIMELINE = "timeline.csv"  # CPU seconds per role in each sampled second
TRAINING_BUSY = 0.5  # a sampled second counts as "training" when the Train workers used at least this much CPU
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TRAINING = "RayTrainWorker"  # the role that trains; every other per-trial role is overhead
# Ray Tune's and Ray Train's processes, one set per trial (Ray Train v2): the Tune function, Train's controller,
# its worker, and their helper actors
PER_TRIAL = (
    "ImplicitFunc",
    "TrainController",
    TRAINING,
    "_QueueActor",
    "PlacementGroupCleaner",
    "SynchronizationActor",
    "DatasetManager",
    "PreemptionWatcher",
)
DAEMONS = {
    "raylet": "raylet",
    "gcs_server": "gcs_server",
    "dashboard": "dashboard (head, agents)",
    "log_monitor": "log_monitor",
    "monitor.py": "monitor",
    "runtime_env": "dashboard (head, agents)",
}
SPACE_TEMPLATE = """from avasr.sweep.spaces import load_space

_SMOKE = load_space("smoke")
SPACE = {{**_SMOKE.space, "epochs": {epochs}, "patience": {epochs}}}
NUM_SAMPLES, SCHEDULER = _SMOKE.num_samples, _SMOKE.scheduler
"""


Timeline = list[tuple[float, dict[str, float]]]  # (seconds since the start, CPU seconds per role since the last)


@dataclass
class Seen:
    role: str
    first_s: float  # since the sampler started
    last_s: float
    cpu_at_first: float  # CPU seconds when first seen (0 for a process started after the sampler)
    cpu: float  # the latest


def cpu_seconds(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def role_of(command: str, driver_pid: int, pid: int) -> str:
    if pid == driver_pid:
        return "driver (sweep_fusion.py)"
    named = re.match(r"ray::(\w+)", command)
    if named:
        return named.group(1)
    for needle, role in DAEMONS.items():
        if needle in command:
            return role
    return "other"


class Sampler(threading.Thread):
    """Every process's CPU time once a second, until stop() (this benchmark's own process excluded)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: dict[int, Seen] = {}
        self.driver_pid = -1
        self.started = time.monotonic()
        self.done = threading.Event()
        self.existing = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        self.timeline: Timeline = []

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        now = time.monotonic() - self.started
        used = defaultdict(float)
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                command = Path(f"/proc/{name}/cmdline").read_text().replace("\0", " ")
                cpu = cpu_seconds(name)
            except OSError:  # exited meanwhile
                continue
            pid = int(name)
            entry = self.seen.get(pid)
            if entry is None:
                before = cpu if pid in self.existing else 0.0  # a process started since counts from its start
                entry = self.seen[pid] = Seen("other", now, now, before, before)
            role = role_of(command, self.driver_pid, pid)
            if role != "other":  # a Ray worker is named after what it runs only once it runs it
                entry.role = role
            used[entry.role] += cpu - entry.cpu
            entry.last_s, entry.cpu = now, cpu
        self.timeline.append((now, dict(used)))

    def stop(self) -> None:
        self.done.set()
        self.join()


def space_file(epochs: int, folder: Path) -> Path:
    path = folder / f"smoke_{epochs}_epochs.py"
    path.write_text(SPACE_TEMPLATE.format(epochs=epochs))
    return path


def cpu_by_role(seen: dict[int, Seen]) -> dict[str, float]:
    """CPU seconds each role used while the sampler ran."""
    cpu = defaultdict(float)
    for entry in seen.values():
        cpu[entry.role] += entry.cpu - entry.cpu_at_first
    return cpu


def report(seen: dict[int, Seen], wall_s: float, trials: int, timeline: Timeline) -> str:
    cpu, count, life = cpu_by_role(seen), defaultdict(int), defaultdict(float)
    for entry in seen.values():
        count[entry.role] += 1
        life[entry.role] += entry.last_s - entry.first_s
    total = sum(cpu.values())
    cores = os.cpu_count() or 1
    lines = [
        f"wall {wall_s:.0f} s on {cores} cores: {total:.0f} CPU s used of {wall_s * cores:.0f} "
        f"({total / (wall_s * cores):.0%}); {trials} trials",
        "",
        f"{'role':<28}{'procs':>6}{'CPU s':>9}{'share':>7}{'per trial':>11}{'% of a core':>13}",
    ]
    for role in sorted(cpu, key=cpu.get, reverse=True):
        per_trial = f"{cpu[role] / trials:.1f}" if role in PER_TRIAL and trials else ""
        busy = f"{100 * cpu[role] / life[role]:.1f}" if life[role] > 0 else ""
        lines.append(f"{role:<28}{count[role]:>6}{cpu[role]:>9.1f}{cpu[role] / total:>7.0%}{per_trial:>11}{busy:>13}")
    helpers = sum(cpu[r] for r in PER_TRIAL if r != TRAINING)
    lines += [
        "",
        f"Ray Tune's and Train's helper processes (every per-trial role but {TRAINING}): {helpers:.0f} CPU s, "
        f"{helpers / max(trials, 1):.1f} per trial, {helpers / total:.0%} of all",
    ]
    return "\n".join(lines + while_training(timeline))


def while_training(timeline: Timeline) -> list[str]:
    """What shared the cores with training: CPU per role over the seconds in which a Train worker trained. On a
    busy machine every core-second another process takes there is one that training waits for."""
    seconds = [used for _, used in timeline if used.get(TRAINING, 0.0) >= TRAINING_BUSY * SAMPLE_S]
    if not seconds:
        return []
    cpu = defaultdict(float)
    for used in seconds:
        for role, value in used.items():
            cpu[role] += value
    window = len(seconds) * SAMPLE_S
    others = sum(v for r, v in cpu.items() if r != TRAINING)
    lines = [
        "",
        f"while Train workers trained ({window:.0f} s): training used {cpu[TRAINING] / window:.2f} cores, "
        f"everything else {others / window:.2f} (cores used by each, over those seconds):",
    ]
    for role in sorted(cpu, key=cpu.get, reverse=True):
        if role != TRAINING and cpu[role] / window >= 0.005:
            lines.append(f"  {role:<28}{cpu[role] / window:>6.3f}")
    return lines


def write_timeline(timeline: Timeline, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "role", "cpu_s"])
        for t, used in timeline:
            writer.writerows([f"{t:.1f}", role, f"{cpu:.3f}"] for role, cpu in sorted(used.items()) if cpu > 0)


def read_timeline(path: Path) -> Timeline:
    """timeline.csv back into samples; [] for a run saved before it was written."""
    if not path.is_file():
        return []
    samples: dict[float, dict[str, float]] = defaultdict(dict)
    with open(path) as f:
        for row in csv.DictReader(f):
            samples[float(row["t_s"])][row["role"]] = float(row["cpu_s"])
    return sorted(samples.items())


def read_processes(path: Path) -> tuple[dict[int, Seen], float]:
    """A run's processes.csv back into Seen entries, and the run's wall time (written in its report)."""
    with open(path) as f:
        seen = {
            int(r["pid"]): Seen(r["role"], float(r["first_s"]), float(r["last_s"]), 0.0, float(r["cpu_s"]))
            for r in csv.DictReader(f)
        }
    wall = re.match(r"wall (\d+) s", (path.parent / "report.txt").read_text())
    return seen, float(wall.group(1))


GROUPS = {
    "training (Train worker)": "tab:green",
    "per-trial Ray Tune/Train helpers": "tab:orange",
    "driver": "tab:blue",
    "Ray daemons, starting workers, other": "tab:gray",
}


def group_of(role: str) -> str:
    if role == TRAINING:
        return "training (Train worker)"
    if role in PER_TRIAL:
        return "per-trial Ray Tune/Train helpers"
    return "driver" if role.startswith("driver") else "Ray daemons, starting workers, other"


def plot(seen: dict[int, Seen], path: Path, title: str) -> Path:
    """CPU seconds per role, largest first, the training role apart from the overhead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = cpu_by_role(seen)
    roles = [r for r in sorted(cpu, key=cpu.get) if cpu[r] >= 1.0]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(roles) + 1.2))
    ax.barh(roles, [cpu[r] for r in roles], color=[GROUPS[group_of(r)] for r in roles])
    ax.set_xlabel("CPU seconds")
    ax.set_title(title, fontsize=10)
    ax.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUPS.values()],
        labels=list(GROUPS),
        loc="lower right",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeline(timeline: Timeline, path: Path, title: str) -> Path:
    """Cores used by each group of roles, second by second, stacked: what shared the machine with training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t for t, _ in timeline]
    stacks = {g: [0.0] * len(timeline) for g in GROUPS}
    for i, (_, used) in enumerate(timeline):
        for role, cpu in used.items():
            stacks[group_of(role)][i] += cpu / SAMPLE_S
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.stackplot(times, *stacks.values(), labels=list(GROUPS), colors=list(GROUPS.values()), linewidth=0)
    ax.axhline(os.cpu_count() or 1, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("seconds since the sweep started")
    ax.set_ylabel("cores")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncols=len(GROUPS), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="the smoke space with this many epochs")
    parser.add_argument("--out", type=Path, default=PROJECT / "outputs" / "sweep_cpu")
    parser.add_argument("--again", action="store_true", help="no sweep: report and plot --out's saved run again")
    parser.add_argument("sweep_args", nargs="*", help="after --: flags for experiments/sweep_fusion.py")
    args = parser.parse_args()
    if args.again:
        seen, wall_s = read_processes(args.out / "processes.csv")
        return finish(seen, wall_s, read_timeline(args.out / TIMELINE), args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    space = ["--space", str(space_file(args.epochs, args.out))] if args.epochs else []
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "sweep_fusion.py"),
        *space,
        "--name",
        f"sweep-cpu-{time.strftime('%Y%m%d-%H%M%S')}",
        *args.sweep_args,
    ]
    sampler = Sampler()
    sampler.start()
    began = time.monotonic()
    with open(args.out / "sweep.log", "w") as log:
        sweep = subprocess.Popen(command, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
        sampler.driver_pid = sweep.pid
        code = sweep.wait()
    wall_s = time.monotonic() - began
    sampler.stop()
    with open(args.out / "processes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pid", "role", "first_s", "last_s", "cpu_s"])
        for pid, e in sorted(sampler.seen.items(), key=lambda item: item[1].first_s):
            writer.writerow([pid, e.role, f"{e.first_s:.1f}", f"{e.last_s:.1f}", f"{e.cpu - e.cpu_at_first:.2f}"])
    write_timeline(sampler.timeline, args.out / TIMELINE)
    if code != 0:
        print(f"the sweep failed (exit {code}): see {args.out / 'sweep.log'}")
        return code
    return finish(sampler.seen, wall_s, sampler.timeline, args.out)


def finish(seen: dict[int, Seen], wall_s: float, timeline: Timeline, out: Path) -> int:
    trials = sum(e.role == TRAINING for e in seen.values())
    text = report(seen, wall_s, trials, timeline)
    (out / "report.txt").write_text(text + "\n")
    title = f"CPU of a sweep of {trials} trials by process role ({wall_s:.0f} s on {os.cpu_count()} cores)"
    print(text + f"\nplot: {plot(seen, out / 'cpu_by_role.png', title)}")
    if timeline:
        print(
            f"plot: {plot_timeline(timeline, out / 'cpu_over_time.png', f'Cores used by a sweep of {trials} trials')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
