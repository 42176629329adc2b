"""Placement groups orphaned by a dead creator actor are found and released, on a real local Ray: the fault behind
issue 9 (a Train controller killed with its trial left its workers' CPUs reserved) rebuilt in a second."""

import time

import pytest
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from avasr.sweep.resources import PlacementGroupInfo, placement_groups, release_orphaned_placement_groups, who_holds
from tests.sweeps import CLUSTER_CPUS

CREATED_WITHIN_S = 60  # a placement group on an idle 2-CPU Ray is ready in milliseconds


@ray.remote(num_cpus=0)
class Reserver:
    """Reserves CPUs the way a Ray Train controller does: a placement group created by a (non-detached) actor."""

    def reserve(self, cpus: float) -> str:
        group = placement_group([{"CPU": cpus}])
        ray.get(group.ready(), timeout=CREATED_WITHIN_S)
        return group.id.hex()


def group(group_id: str) -> PlacementGroupInfo:
    (found,) = [g for g in placement_groups() if g.id == group_id]
    return found


def wait_for(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


def free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def test_a_group_whose_creator_actor_was_killed_stays_reserved_until_released(local_ray):
    reserver = Reserver.remote()
    group_id = ray.get(reserver.reserve.remote(1.5), timeout=CREATED_WITHIN_S)
    assert not group(group_id).orphaned(ray.get_runtime_context().get_job_id())  # its creator is alive
    ray.kill(reserver)
    wait_for(lambda: group(group_id).creator_actor_dead, "GCS to see the creator dead")

    # Ray keeps it: the job that created it is alive (this is what held a killed trial's CPUs in the sweep)
    time.sleep(1.0)
    orphan = group(group_id)
    assert (orphan.state, orphan.resources["CPU"], orphan.detached) == ("CREATED", 1.5, False)
    wait_for(lambda: free_cpus() == pytest.approx(0.5), "Ray's view of the free CPUs")
    assert f"placement group {group_id[:8]} (CREATED, CPU 1.5)" in who_holds("CPU")
    assert "dead Reserver" in who_holds("CPU")

    released = release_orphaned_placement_groups()
    assert [g.id for g in released] == [group_id]
    wait_for(lambda: free_cpus() == CLUSTER_CPUS, "the CPUs to come back")
    assert group(group_id).state == "REMOVED"
    assert release_orphaned_placement_groups() == []


def test_groups_of_live_actors_and_of_drivers_are_never_released(local_ray):
    reserver = Reserver.remote()
    actor_group = ray.get(reserver.reserve.remote(0.5), timeout=CREATED_WITHIN_S)
    driver_group = placement_group([{"CPU": 0.5}])
    ray.get(driver_group.ready(), timeout=CREATED_WITHIN_S)
    try:
        assert release_orphaned_placement_groups() == []
        assert group(actor_group).state == group(driver_group.id.hex()).state == "CREATED"
        assert group(driver_group.id.hex()).creator_actor_id is None
        wait_for(lambda: free_cpus() == pytest.approx(1.0), "Ray's view of the free CPUs")
        holders = who_holds("CPU")
        assert holders.startswith("1 of 2 CPUs free; ") and "live Reserver" in holders and "a driver" in holders
    finally:
        remove_placement_group(driver_group)
        ray.kill(reserver)
    wait_for(lambda: group(actor_group).creator_actor_dead, "GCS to see the creator dead")
    assert [g.id for g in release_orphaned_placement_groups()] == [actor_group]
    wait_for(lambda: free_cpus() == CLUSTER_CPUS, "the CPUs to come back")


def test_a_group_whose_creator_was_destroyed_with_the_group_it_ran_in_is_released(local_ray):
    # a Train controller runs inside its Tune trial's placement group; when Tune stops the trial it removes that
    # group and Ray destroys the controller (in one soak round GCS then kept the controller's own group with
    # creator_actor_dead false while the actor table said DEAD: placement_groups() reads both)
    outer = placement_group([{"CPU": 0.1}])
    ray.get(outer.ready(), timeout=CREATED_WITHIN_S)
    reserver = Reserver.options(scheduling_strategy=PlacementGroupSchedulingStrategy(outer)).remote()
    inner = ray.get(reserver.reserve.remote(1.0), timeout=CREATED_WITHIN_S)
    remove_placement_group(outer)
    wait_for(lambda: group(inner).creator_actor_dead, "the creator to be seen dead")
    assert [g.id for g in release_orphaned_placement_groups()] == [inner]
    wait_for(lambda: free_cpus() == CLUSTER_CPUS, "the CPUs to come back")
