"""Multi-host runs of the other families (tests/test_multihost.py has IntroVAC's, the stops,
resumes, budgets and failures; a module of its own so that a parallel test run puts it beside
that one): a whole tiny run of CSVAE, CCVAE, Lr-LiVAE and IFcVAEGAN as 2 processes x 2 CPU
devices equals one process of 4 devices, parameters, training metrics and FLOPs (CCVAE's with
two steps per call). SGD for every
player (`multihost_job.sgd`); the end-of-run evaluation is process 0's for every method, and
IntroVAC's test covers it."""

from __future__ import annotations

import pytest

from multihost_job import assert_runs_equal, sgd, whole_runs


# CCVAE's runs take two steps per call (config.steps_per_call): each process's rows of the
# stacked batches of a call form one global array.
EXTRA = {"ccvae": {"steps_per_call": 2, "log_every_steps": 2}}


@pytest.mark.parametrize("name", ("csvae", "ccvae", "lrlivae", "ifcvaegan"))
def test_a_whole_run_on_2_processes_equals_one_process_of_4_devices(tmp_path, name):
    assert_runs_equal(whole_runs(tmp_path, name, grid_size=0, **sgd(name),
                                 **EXTRA.get(name, {})))
