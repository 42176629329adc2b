"""The cluster's CPUs and GPUs always come back: placement groups orphaned by dead Train controllers are removed by
the sweep itself, and a trial that cannot get its resources is told who holds them.

Why: a Ray Train run reserves its workers' CPUs/GPUs in a placement group created by its `TrainController` actor.
Such a group is not detached, so Ray's GCS frees it only when both its creator actor and its creator *job* are dead;
the job is the sweep's driver, which lives on. When Tune stops a trial (ASHA) or a trial's actor dies, its
controller dies with it, and only Ray Train's best-effort `PlacementGroupCleaner` (a detached actor polling the
State API) can free the group; it does not always (benchmarks/placement_groups.py reproduces it; docs/decisions.md
has the evidence). Inside a sweep a second path leaks too: Tune removes a stopped trial's own placement group, Ray
destroys the controller that ran in it, and GCS keeps the controller's group with `creator_actor_dead: false`
although the actor table says DEAD. Either way the CPUs stay reserved until the driver exits, and the next trials
wait for them forever.

The rule applied here is GCS's own lifetime rule with "job dead" replaced by "creator actor dead": a non-detached
group whose creating actor is dead can never be used again (its workers were that actor's, and died with it), so
removing it is always safe. It is applied to this job's groups, to groups of jobs that are already dead, and to
dead Train controllers' groups of any job (nothing but the controller ever schedules into those). The
sweep's driver applies it every second while its trials run (releasing_orphans), and waits, bounded, for its
Train runs' groups to be gone when they end (settle_job_resources).

This reads Ray's GCS tables through `ray._private.state` (the public `placement_group_table()` omits the creator);
tests/test_resources.py checks it against a real local Ray, so a Ray upgrade that changes it fails loudly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import ray
from ray.core.generated import gcs_pb2
from ray.util.placement_group import PlacementGroup, remove_placement_group

from avasr.errors import AvasrError

REAP_INTERVAL_S = 1.0  # how often the sweep's driver looks for orphaned groups while trials run
REAPER_JOIN_S = 10.0  # a reaper pass that takes longer than this is left to end on its own (daemon thread)
POLL_S = 0.2
TRAIN_CONTROLLER = "TrainController"  # Ray Train's controller actor: creates each run's placement group
NIL_ACTOR = b"\xff" * 16  # GCS's id for "created by a driver, not by an actor"
_STATES = gcs_pb2.PlacementGroupTableData.PlacementGroupState


class ResourcesError(AvasrError, RuntimeError):
    """A trial's Train worker got no CPUs/GPUs in the stated time; the message names who holds them."""


@dataclass(frozen=True)
class PlacementGroupInfo:
    """One placement group as GCS sees it."""

    id: str  # hex
    state: str  # PENDING, PREPARED, CREATED, RESCHEDULING, REMOVED
    resources: dict[str, float]  # summed over bundles
    creator_actor_id: str | None  # None: created by a driver
    creator_actor_dead: bool
    creator_class: str  # the creator's class (TrainController, ...) from the actor table; "actor" when unknown
    creator_job_id: str
    creator_job_dead: bool
    detached: bool

    @property
    def live(self) -> bool:
        return self.state != "REMOVED"

    def orphaned(self, job_id: str) -> bool:
        """Holds (or waits for) resources that nobody can use any more: see the module docstring. A dead Train
        controller's group counts whatever its job: a SIGINTed sweep's last trial kept its group after its driver
        had exited, with its job not (yet) marked dead, and the resumed sweep (another job) waited for it."""
        return (
            self.live
            and not self.detached
            and self.creator_actor_id is not None
            and self.creator_actor_dead
            and (self.creator_job_id == job_id or self.creator_job_dead or self.creator_class == TRAIN_CONTROLLER)
        )

    def describe(self) -> str:
        held = ", ".join(f"{k} {v:g}" for k, v in sorted(self.resources.items()) if not k.startswith("bundle_group"))
        creator = (
            "a driver"
            if self.creator_actor_id is None
            else (f"{'dead' if self.creator_actor_dead else 'live'} {self.creator_class} {self.creator_actor_id[:8]}")
        )
        return (
            f"placement group {self.id[:8]} ({self.state}, {held}) of job {self.creator_job_id}, created by {creator}"
        )


def _info(raw: bytes) -> PlacementGroupInfo:
    data = gcs_pb2.PlacementGroupTableData.FromString(raw)
    resources: dict[str, float] = {}
    for bundle in data.bundles:
        for name, amount in bundle.unit_resources.items():
            resources[name] = resources.get(name, 0.0) + amount
    return PlacementGroupInfo(
        id=data.placement_group_id.hex(),
        state=_STATES.Name(data.state),
        resources=resources,
        creator_actor_id=None if data.creator_actor_id in (b"", NIL_ACTOR) else data.creator_actor_id.hex(),
        creator_actor_dead=data.creator_actor_dead,
        creator_class="actor",
        creator_job_id=data.creator_job_id.hex(),
        creator_job_dead=data.creator_job_dead,
        detached=data.is_detached,
    )


def placement_groups() -> list[PlacementGroupInfo]:
    """Every placement group GCS knows of, removed ones included.

    A creator is dead when the group's record says so or when the actor table does: an actor destroyed because
    the placement group it ran in was removed (a Train controller inside the Tune trial's group, when Tune stops
    the trial) is DEAD in the actor table while its own group's record still says `creator_actor_dead: false`."""
    groups = [_info(raw) for raw in ray._private.state.state._connect_and_get_accessor().get_placement_group_table()]
    return [_with_creator(g) if g.live and g.creator_actor_id else g for g in groups]


def _with_creator(group: PlacementGroupInfo) -> PlacementGroupInfo:
    """The group with its creator's class and state from the actor table: one lookup per group, since the reaper
    reads the table every second. An actor GCS no longer knows is dead."""
    found = ray._private.state.state.actor_table(actor_id=group.creator_actor_id)
    dead = group.creator_actor_dead or (found.get("State", "DEAD") if found else "DEAD") == "DEAD"
    return replace(
        group, creator_actor_dead=dead, creator_class=found.get("ActorClassName", "actor") if found else "actor"
    )


def current_job_id() -> str:
    return ray.get_runtime_context().get_job_id()


def release_orphaned_placement_groups(job_id: str | None = None) -> list[PlacementGroupInfo]:
    """Remove every group orphaned by a dead creator (this job's, a dead job's, or a dead Train controller's of
    any job: PlacementGroupInfo.orphaned); returns what was removed."""
    job_id = job_id or current_job_id()
    removed = []
    for group in placement_groups():
        if group.orphaned(job_id):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group.id))))
            removed.append(group)
    return removed


def who_holds(resource: str = "CPU") -> str:
    """One line: how much of `resource` is free, and every placement group that reserves some of it (CREATED; a
    PENDING group waits for resources and holds none)."""
    total = ray.cluster_resources().get(resource, 0.0)
    free = ray.available_resources().get(resource, 0.0)
    holders = [g.describe() for g in placement_groups() if g.state == "CREATED" and g.resources.get(resource)]
    return f"{free:g} of {total:g} {resource}s free; " + (
        "; ".join(holders) if holders else "no placement group holds any (tasks or actors outside one do)"
    )


def inspectable() -> bool:
    """GCS's tables are readable from this process: not through Ray Client (`ray://`), which has no GCS link."""
    return not ray.util.client.ray.is_connected()


def release_and_say() -> None:
    """One pass of the reaper: what it released is printed; an error (GCS busy or restarting) is printed and the
    next pass tries again, since freeing resources must never be what stops a sweep."""
    try:
        for group in release_orphaned_placement_groups():
            print(f"avasr: released an orphaned {group.describe()}")
    except Exception as e:  # noqa: BLE001 - any Ray error: retried at the next pass
        print(f"avasr: could not look for orphaned placement groups ({type(e).__name__}: {e}); retrying")


@contextmanager
def releasing_orphans(interval_s: float = REAP_INTERVAL_S) -> Iterator[None]:
    """Inside the block (the sweep's Tuner.fit), a driver thread releases orphaned placement groups every
    `interval_s`, whatever Ray Train's own cleaner does. A thread, not a Tune callback: Tune pickles its callbacks
    into the experiment and a restored sweep would run the old copy, or none."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            release_and_say()

    reaper = threading.Thread(target=loop, name="avasr-placement-group-reaper", daemon=True)
    if inspectable():
        reaper.start()
    try:
        yield
    finally:
        stop.set()
        if reaper.is_alive():
            reaper.join(timeout=interval_s + REAPER_JOIN_S)


def settle_job_resources(timeout_s: float) -> list[PlacementGroupInfo]:
    """After a sweep's trials: wait (at most `timeout_s`) until no Train controller of this job holds a placement
    group any more, releasing orphaned ones meanwhile. Returns what is still held then, after saying so: never
    raises and never waits longer (the trials' results matter more than a slow release)."""
    if not inspectable():
        return []
    deadline = time.monotonic() + timeout_s
    held: list[PlacementGroupInfo] = []
    try:
        job_id = current_job_id()
        while True:
            release_orphaned_placement_groups(job_id)
            held = [
                g
                for g in placement_groups()
                if g.live and g.creator_job_id == job_id and g.creator_class == TRAIN_CONTROLLER
            ]
            if not held or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
    except Exception as e:  # noqa: BLE001 - see release_and_say
        print(f"avasr: could not check this sweep's placement groups ({type(e).__name__}: {e})")
    for group in held:
        print(f"avasr: still held {timeout_s:g} s after the trials ended: {group.describe()}")
    return held
