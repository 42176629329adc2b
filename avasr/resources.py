"""The cluster's CPUs and GPUs always come back: placement groups orphaned by dead Train controllers are removed by
the sweep itself, and a trial that cannot get its resources is told who holds them.

Why (issue 9; reproduced by benchmarks/placement_groups.py): a Ray Train run reserves its workers' CPUs/GPUs in a
placement group created by its `TrainController` actor. Such a group is not detached, so Ray's GCS frees it only
when both its creator actor and its creator *job* are dead; the job is the sweep's driver, which lives on. When Tune
stops a trial (ASHA) or a trial's actor dies, its controller dies with it and only Ray Train's best-effort
`PlacementGroupCleaner` (a detached actor polling the State API) can free the group. In the repro about one kill in
four left the group CREATED with its creator DEAD and its cleaner ALIVE but no longer monitoring, so the group's
CPUs were lost until the driver exited, and the next trials waited for them forever.

The rule applied here is GCS's own lifetime rule with "job dead" replaced by "creator actor dead": a non-detached
group whose creating actor is dead can never be used again (its workers were that actor's, and died with it), so
removing it is always safe. It is applied to this job's groups and to groups of jobs that are already dead.

This reads Ray's GCS tables through `ray._private.state` (the public `placement_group_table()` omits the creator);
tests/test_resources.py checks it against a real local Ray, so a Ray upgrade that changes it fails loudly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray
from ray.core.generated import gcs_pb2
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, remove_placement_group

from avasr.errors import AvasrError

REAP_INTERVAL_S = 1.0  # how often the sweep's driver looks for orphaned groups while trials run
POLL_S = 0.2
NIL_ACTOR = b"\xff" * 16  # GCS's id for "created by a driver, not by an actor"
_STATES = gcs_pb2.PlacementGroupTableData.PlacementGroupState


class ResourcesError(AvasrError, RuntimeError):
    """The cluster's resources did not come back, or a trial could not get its own, in the stated time."""


@dataclass(frozen=True)
class PlacementGroupInfo:
    """One placement group as GCS sees it."""

    id: str  # hex
    state: str  # PENDING, PREPARED, CREATED, RESCHEDULING, REMOVED
    resources: dict[str, float]  # summed over bundles
    creator_actor_id: str | None  # None: created by a driver
    creator_actor_dead: bool
    creator_job_id: str
    creator_job_dead: bool
    detached: bool

    @property
    def live(self) -> bool:
        return self.state != "REMOVED"

    def orphaned(self, job_id: str) -> bool:
        """Holds (or waits for) resources that nobody can use any more: see the module docstring."""
        return (self.live and not self.detached and self.creator_actor_id is not None and self.creator_actor_dead
                and (self.creator_job_id == job_id or self.creator_job_dead))

    def describe(self) -> str:
        held = ", ".join(f"{k} {v:g}" for k, v in sorted(self.resources.items()) if not k.startswith("bundle_group"))
        creator = "a driver" if self.creator_actor_id is None else (
            f"{'dead' if self.creator_actor_dead else 'live'} {actor_class(self.creator_actor_id)} "
            f"{self.creator_actor_id[:8]}")
        return (f"placement group {self.id[:8]} ({self.state}, {held}) of job {self.creator_job_id}, "
                f"created by {creator}")


def _info(raw: bytes) -> PlacementGroupInfo:
    data = gcs_pb2.PlacementGroupTableData.FromString(raw)
    resources: dict[str, float] = {}
    for bundle in data.bundles:
        for name, amount in bundle.unit_resources.items():
            resources[name] = resources.get(name, 0.0) + amount
    return PlacementGroupInfo(
        id=data.placement_group_id.hex(), state=_STATES.Name(data.state), resources=resources,
        creator_actor_id=None if data.creator_actor_id in (b"", NIL_ACTOR) else data.creator_actor_id.hex(),
        creator_actor_dead=data.creator_actor_dead, creator_job_id=data.creator_job_id.hex(),
        creator_job_dead=data.creator_job_dead, detached=data.is_detached)


def placement_groups() -> list[PlacementGroupInfo]:
    """Every placement group GCS knows of, removed ones included."""
    return [_info(raw) for raw in ray._private.state.state._connect_and_get_accessor().get_placement_group_table()]


def actor_class(actor_id: str) -> str:
    found = ray._private.state.state.actor_table(actor_id=actor_id)
    return found.get("ActorClassName", "actor") if found else "actor"


def current_job_id() -> str:
    return ray.get_runtime_context().get_job_id()


def release_orphaned_placement_groups(job_id: str | None = None) -> list[PlacementGroupInfo]:
    """Remove every group orphaned by a dead creator (this job's, or a dead job's); returns what was removed."""
    job_id = job_id or current_job_id()
    removed = []
    for group in placement_groups():
        if group.orphaned(job_id):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group.id))))
            removed.append(group)
    return removed


def who_holds(resource: str = "CPU") -> str:
    """One line: how much of `resource` is free, and every live placement group that reserves some of it."""
    total = ray.cluster_resources().get(resource, 0.0)
    free = ray.available_resources().get(resource, 0.0)
    holders = [g.describe() for g in placement_groups() if g.live and g.resources.get(resource)]
    return (f"{free:g} of {total:g} {resource}s free; "
            + ("; ".join(holders) if holders else "no placement group holds any (tasks or actors outside one do)"))


def wait_until_free(timeout_s: float, resources: tuple[str, ...] = ("CPU", "GPU")) -> None:
    """Block until every CPU and GPU of the cluster is free again, removing orphaned groups meanwhile.

    Raises ResourcesError naming the holders when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        release_orphaned_placement_groups()
        total, free = ray.cluster_resources(), ray.available_resources()
        busy = [r for r in resources if free.get(r, 0.0) < total.get(r, 0.0) - 1e-6]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise ResourcesError(f"the cluster's {', '.join(busy)}s were not all free after {timeout_s:g} s: "
                                 + " | ".join(who_holds(r) for r in busy))
        time.sleep(POLL_S)


class PlacementGroupReaper(Callback):
    """A Tune callback (it runs in the sweep's driver): removes orphaned placement groups as trials end, are
    stopped or fail, and every REAP_INTERVAL_S while the sweep runs, whatever Ray Train's own cleaner does."""

    def __init__(self, interval_s: float = REAP_INTERVAL_S):
        self.interval_s = interval_s
        self.next_reap = 0.0
        self.released: list[PlacementGroupInfo] = []

    def reap(self) -> None:
        self.next_reap = time.monotonic() + self.interval_s
        for group in release_orphaned_placement_groups():
            print(f"avasr: released an orphaned {group.describe()}")
            self.released.append(group)

    def on_step_begin(self, iteration, trials, **info):
        if time.monotonic() >= self.next_reap:
            self.reap()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.next_reap = 0.0  # its controller may still be dying: look at the next steps, not only now

    def on_trial_error(self, iteration, trials, trial, **info):
        self.next_reap = 0.0


def settle_job_resources(timeout_s: float) -> list[PlacementGroupInfo]:
    """After a sweep's trials: wait (at most `timeout_s`) until no actor of this job (Train controllers) holds a
    placement group any more, removing orphaned ones meanwhile. Returns what is still held then, after saying so.

    Groups the driver itself created are not waited for: Tune removes its trials' own, and others are the user's."""
    job_id = current_job_id()
    deadline = time.monotonic() + timeout_s
    while True:
        release_orphaned_placement_groups(job_id)
        held = [g for g in placement_groups()
                if g.live and g.creator_job_id == job_id and g.creator_actor_id is not None]
        if not held or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    for group in held:
        print(f"avasr: still held {timeout_s:g} s after the trials ended: {group.describe()}")
    return held
