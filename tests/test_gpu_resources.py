"""Fractional GPUs: --gpus-per-trial 1/n packs n trials on each GPU (plan_resources reads a plain dict of the
cluster's resources, as ray.cluster_resources() gives it: no Ray needed)."""

import pytest

from avasr.sweep.driver import SweepError, plan_resources


def test_a_quarter_gpu_packs_four_trials_on_one_gpu():
    plan = plan_resources({"CPU": 16.0, "GPU": 1.0}, cpus_per_trial=1, gpus_per_trial=0.25)
    assert (plan.concurrency, plan.gpus, plan.trials_per_gpu, plan.gpu_slots) == (4, 0.25, 4, 4)
    assert plan.describe() == "4 trial(s) at a time, 1 CPU and 0.25 GPU each, 4 trials per GPU"


def test_a_whole_gpu_per_trial_runs_one_trial_per_gpu():
    plan = plan_resources({"CPU": 16.0, "GPU": 1.0}, cpus_per_trial=1, gpus_per_trial=None)
    assert (plan.concurrency, plan.gpus, plan.trials_per_gpu) == (1, 1.0, 1)
    assert plan.describe() == "1 trial(s) at a time, 1 CPU and 1 GPU each, 1 trial per GPU"


@pytest.mark.parametrize(
    ("share", "per_gpu"), [(1.0, 1), (0.5, 2), (0.3333, 3), (0.25, 4), (0.2, 5), (0.125, 8), (0.1, 10)]
)
def test_one_nth_of_a_gpu_packs_n_trials_on_each_of_the_gpus(share, per_gpu):
    plan = plan_resources({"CPU": 64.0, "GPU": 4.0}, cpus_per_trial=1, gpus_per_trial=share)
    assert (plan.trials_per_gpu, plan.gpu_slots, plan.concurrency) == (per_gpu, 4 * per_gpu, 4 * per_gpu)


def test_the_cpus_can_bound_a_packed_gpu_and_the_line_says_so():
    plan = plan_resources({"CPU": 2.0, "GPU": 1.0}, cpus_per_trial=1, gpus_per_trial=0.25)
    assert (plan.concurrency, plan.gpu_slots) == (2, 4)
    assert plan.describe() == (
        "2 trial(s) at a time, 1 CPU and 0.25 GPU each, 4 trials per GPU "
        "(the CPUs fill 2 of the GPUs' 4 places: lower --cpus-per-trial)"
    )


def test_a_cpu_only_sweep_says_nothing_of_gpus():
    plan = plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=None)
    assert (plan.trials_per_gpu, plan.gpu_slots) == (0, 0)
    assert plan.describe() == "2 trial(s) at a time, 1 CPU and 0 GPU each"


@pytest.mark.parametrize(
    ("share", "message"),
    [
        (0.3, r"--gpus-per-trial 0.3 does not divide a GPU: 3 trial\(s\) on one would leave 0.1 of it idle; give "
         r"1/n of a GPU, e.g. 0.3333 \(3 per GPU\) or 0.25 \(4 per GPU\)"),
        (0.3334, r"--gpus-per-trial 0.3334 does not divide a GPU: 2 trial\(s\) on one would leave 0.33 of it idle; "
         r"give 1/n of a GPU, e.g. 0.5 \(2 per GPU\) or 0.3333 \(3 per GPU\)"),
        (0.7, r"--gpus-per-trial 0.7 does not divide a GPU: 1 trial\(s\) on one would leave 0.3 of it idle; give "
         r"1/n of a GPU, e.g. 1 \(1 per GPU\) or 0.5 \(2 per GPU\)"),
        (1.5, r"--gpus-per-trial must be between 0 and 1, got 1.5: a trial trains on one device \(1\), or shares"),
        (-0.25, r"--gpus-per-trial must be between 0 and 1, got -0.25"),
    ],
)  # fmt: skip
def test_a_share_that_does_not_divide_a_gpu_is_refused_with_shares_that_do(share, message):
    with pytest.raises(SweepError, match=message):
        plan_resources({"CPU": 16.0, "GPU": 2.0}, cpus_per_trial=1, gpus_per_trial=share)


def test_a_share_is_refused_before_the_cluster_is_asked_whether_it_has_gpus():
    with pytest.raises(SweepError, match="does not divide a GPU"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=0.3)
    with pytest.raises(SweepError, match=r"a trial needs 0.25 GPUs but the Ray cluster has 0: pass --gpus-per-trial 0"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=0.25)
