"""The datatrove plan of docs/datatrove.md on a real Slurm cluster: a one-node cluster on this
machine (benchmarks/slurm/local-slurm.sh; `.ci/run` starts it), jobs submitted by datatrove's
SlurmPipelineExecutor with sbatch, each stage an array job depending on the one before."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_datatrove import _kept_ids, reference  # noqa: F401 - the fixture

from curate.datatrove_steps import PLAN_FILE, plan_stages
from probes.storage import as_path, is_remote

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode,
        reason="no Slurm cluster here: benchmarks/slurm/local-slurm.sh starts one (root, apt)",
    ),
]
VENV = Path(sys.executable).parent / "activate"


def _slurm_stages(shards: Path, work: Path, recipe):
    from datatrove.executor.slurm import SlurmPipelineExecutor

    common = {"time": "00:20:00", "partition": "debug", "cpus_per_task": 1, "mem_per_cpu_gb": 2}
    common["venv_path"] = str(VENV)
    executors, depends = [], None
    stages = plan_stages(str(shards), str(work), recipe)
    for steps, name, tasks in zip(stages, ("score", "plan", "filter"), (2, 1, 2), strict=True):
        depends = SlurmPipelineExecutor(
            steps,
            tasks=tasks,
            job_name=f"rosetta-{name}",
            logging_dir=str(work / "logs" / name),
            depends=depends,
            **common,
        )
        executors.append(depends)
    return executors


def _wait(work: Path, stages: dict[str, int], timeout: float = 600) -> None:
    """Until every stage has written a completion marker per task (datatrove's `completions`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_remote(work):
            work.fs.invalidate_cache()  # the jobs write there, not this process
        done = {n: len(list((work / "logs" / n / "completions").glob("*"))) for n in stages}
        if all(done[n] >= tasks for n, tasks in stages.items()):
            return
        time.sleep(2)
    logs = sorted(Path("slurm_logs").rglob("*.out")) + sorted(
        p for p in (work / "logs").rglob("*.out") if not is_remote(work)
    )
    tail = "\n".join(p.read_text()[-2000:] for p in logs[-3:])
    queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    pytest.fail(f"Slurm jobs unfinished after {timeout:.0f} s: {done}\n{queue}\n{tail}")


@pytest.mark.parametrize("store", ["shared disk", "bucket"])
def test_sbatch_runs_the_plan_and_keeps_what_curate_filter_keeps(
    reference,  # noqa: F811
    store,
    tmp_path,
    request,
    monkeypatch,
):
    """With a bucket, shards, statistics, plan, documents and logs all live there (the jobs get
    the store's AWS_* environment through sbatch --export=ALL), as on a multi-node cluster."""
    shards, recipe, manifest, kept = reference
    work = tmp_path
    if store == "bucket":
        s3 = request.getfixturevalue("s3")
        shards = as_path(s3.upload(shards, "slurm-corpus"))
        work = as_path(f"s3://{s3.bucket}/slurm")
        monkeypatch.chdir(tmp_path)  # datatrove puts Slurm's own logs in ./slurm_logs then
    score, plan, keep = _slurm_stages(shards, work, recipe)
    keep.run()  # submits its dependencies first, each with --dependency=afterok:<the one before>
    assert score.job_id and plan.job_id and keep.job_id
    script = (work / "logs" / "score" / "launch_script.slurm").read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --partition=debug" in script
    assert f"source {VENV}" in script and "launch_pickled_pipeline" in script
    _wait(work, {"score": 2, "plan": 1, "filter": 2})
    result = json.loads((work / "plan" / PLAN_FILE).read_text())
    assert result["kept_tokens"] == manifest["kept_tokens"]
    assert _kept_ids(work / "kept") == kept
    # A rerun submits nothing: every task of every stage is complete.
    again = _slurm_stages(shards, work, recipe)
    again[2].run()
    assert [s.job_id for s in again] == [-1, -1, -1]
