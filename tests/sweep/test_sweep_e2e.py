"""End to end with the real trainer (`optimlab train`) on tiny MNIST-1D runs: kill -9 and re-run, local vs Ray
equality, the SLURM path through submitit's local executor with a preemption, and `optimlab compare`."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml
from sweep_helpers import describe_dir, pids_holding, pids_with_arg, wait_for

from optimlab.sweep import expand, load_spec, run_sweep
from optimlab.rundir import read_summary

pytestmark = pytest.mark.slow


def optimlab(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "optimlab", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def write_spec(tmp_path, name, steps, optims, **train):
    base = {"task": "mnist1d_mlp", "train.steps": steps, **{f"train.{k}": v for k, v in train.items()}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "grid": {"optim": list(optims)}}))
    return path


def test_kill_9_a_run_mid_sweep_then_rerun_skips_completed_and_resumes_it(tmp_path):
    spec_path = write_spec(tmp_path, "kr", 400, optims=("sgd", "adam"), checkpoint_every=50, eval_every=200)
    runs = expand(load_spec(spec_path), tmp_path / "runs")
    victim = next(r for r in runs if r.config.optim.name == "sgd")
    sweep = optimlab("sweep", str(spec_path), "--workers", "2", "--root", "runs", "--no-progress", cwd=tmp_path)
    log = tmp_path / "runs" / "kr" / "logs" / f"{victim.key}.log"
    # Kill the victim while it runs and has a checkpoint to resume from (it keeps only its last two).
    (pid,) = wait_for(lambda: list((victim.run_dir / "checkpoints").glob("step-*.pt"))
                      and pids_holding(victim.run_dir / ".lock", exclude=(sweep.pid,)),
                      timeout=300, interval=0.02, describe=lambda: describe_dir(victim.run_dir, log))
    os.kill(pid, signal.SIGKILL)
    _, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 1, err  # the sweep went on; one run is not done
    record = {r["dir"]: r for r in json.loads((tmp_path / "runs" / "kr" / "sweep.json").read_text())["runs"]}
    assert record[victim.key]["status"] == "interrupted" and record[victim.key]["error"] == "killed by SIGKILL"
    assert read_summary(victim.run_dir)["status"] == "running"  # what the trainer left: the sweep knows better
    others = [r for r in runs if r is not victim]
    assert all(record[r.key]["status"] == "completed" for r in others)
    untouched = {r.key: ((r.run_dir / "summary.json").stat().st_mtime_ns, read_summary(r.run_dir)["params_sha256"])
                 for r in others}

    again = optimlab("sweep", str(spec_path), "--workers", "2", "--root", "runs", "--no-progress", cwd=tmp_path)
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert {r.key: ((r.run_dir / "summary.json").stat().st_mtime_ns, read_summary(r.run_dir)["params_sha256"])
            for r in others} == untouched
    summary = read_summary(victim.run_dir)
    assert summary["status"] == "completed" and summary["step"] == 400
    steps = [json.loads(line)["step"] for line in (victim.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 0  # one trajectory, resumed from a checkpoint, not restarted
    log = (tmp_path / "runs" / "kr" / "logs" / f"{victim.key}.log").read_text()
    assert log.count("\n=== 20") == 2 and "=== exit code -9" in log  # killed once, then run to the end


def test_local_and_ray_backends_give_identical_runs(tmp_path):
    spec = load_spec(write_spec(tmp_path, "eq", 40, optims=("sgd", "adam"), eval_every=20))
    local = run_sweep(spec, root=tmp_path / "local", workers=2, progress=False)
    ray = run_sweep(spec, root=tmp_path / "ray", backend="ray", workers=2, progress=False)
    assert local.exit_code == ray.exit_code == 0
    for a, b in zip(local.runs, ray.runs):
        assert a.key == b.key
        sa, sb = read_summary(a.run_dir), read_summary(b.run_dir)
        assert sa["params_sha256"] == sb["params_sha256"] and sa["final"] == sb["final"]


def test_slurm_backend_on_submitits_local_executor_requeues_a_preempted_run(tmp_path):
    spec = load_spec(write_spec(tmp_path, "sl", 400, optims=("sgd", "adam"), checkpoint_every=50, eval_every=200))
    runs = expand(spec, tmp_path / "runs")
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_sweep(
        spec, root=tmp_path / "runs", backend="slurm", workers=2, progress=False,
        backend_options={"cluster": "local", "poll": 0.2})))
    thread.start()
    victim = runs[0]
    # The victim's trainer, once it has a checkpoint to resume from (it keeps only its last two).
    (trainer,) = wait_for(lambda: list((victim.run_dir / "checkpoints").glob("step-*.pt"))
                          and pids_with_arg(f"run_dir={victim.run_dir}"),
                          timeout=300, interval=0.02, describe=lambda: describe_dir(victim.run_dir))
    # The job process (submitit) of the victim's array task: the parent of its trainer.
    job = int(open(f"/proc/{trainer}/stat").read().rsplit(")", 1)[1].split()[1])
    import submitit

    os.kill(job, getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))  # what SLURM sends before the time limit
    thread.join(timeout=240)
    sweep = result["r"]
    assert sweep.exit_code == 0 and set(sweep.statuses.values()) == {"completed"}
    log = (tmp_path / "runs" / "sl" / "logs" / f"{victim.key}.log").read_text()
    assert "=== exit code 75" in log and log.count("\n=== 20") == 2  # checkpointed, requeued, resumed
    steps = [json.loads(line)["step"] for line in (victim.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and read_summary(victim.run_dir)["step"] == 400


def test_compare_end_to_end_writes_the_report(tmp_path):
    process = optimlab("compare", "optims=[sgd,adam]", "seeds=1", "lrs={sgd: [0.1], adam: [0.003]}",
                       "train.steps=40", "train.eval_every=20", "workers=2", cwd=tmp_path)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    index = tmp_path / out.strip().splitlines()[-1]
    assert index == tmp_path / "reports" / "compare" / "index.html" and index.exists()
    assert (index.parent / "report.md").exists()
    assert "sweep compare-mnist1d_mlp" in err  # the progress bar
    assert len(list((tmp_path / "runs" / "compare-mnist1d_mlp" / "mnist1d_mlp").iterdir())) == 2
