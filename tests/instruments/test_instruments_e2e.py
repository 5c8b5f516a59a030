"""End to end through the trainer: every instrument on, same final parameters (params_sha256) as without,
for SGD, Adam, SGD_C, MARTHE-controlled SGD, a dropout model and a batch-norm model, across kill -9 / resume;
and a CLI run whose metrics.jsonl holds the per-layer series."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.config import load_config
from optimlab.train import train

EVERY = ["instruments=[grad_stats,direction_variance,hessian_top,step_stats]", "instruments.every=4",
         "instruments.draws=3", "instruments.hessian_iterations=3"]
COMMON = ["train.steps=10", "train.log_every=2", "train.eval_every=5", "train.checkpoint_every=5",
          "log.progress=never"]
CASES = {
    "sgd_dropout": ["task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.9"],
    "adam_dropout": ["task=toy", "task.batch_size=16", "optim=adam", "optim.lr=0.01"],
    "sgd_c_dropout": ["task=toy", "task.batch_size=16", "optim=sgd_c", "optim.lr=0.05", "optim.topC=3"],
    "marthe_dropout": ["task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.05", "hyper=marthe",
                       "hyper.hyper_lr=1e-4"],
    "adam_batch_norm": ["task=digits_cnn", "task.batch_norm=true", "task.batch_size=32", "optim=adam",
                        "optim.lr=0.003"],
    "microbatched": ["task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.1", "train.microbatch_size=5"],
}


def run(tmp_path: Path, name: str, overrides: list[str]) -> tuple[dict, list[dict]]:
    run_dir = tmp_path / name
    summary = train(load_config([*overrides, *COMMON, f"run_dir={run_dir}"]))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, lines


@pytest.mark.parametrize("case", CASES)
def test_every_instrument_keeps_params_sha256(tmp_path, case):
    plain, _ = run(tmp_path, "plain", CASES[case])
    measured, lines = run(tmp_path, "measured", [*CASES[case], *EVERY])
    assert plain["status"] == measured["status"] == "completed"
    assert plain["params_sha256"] == measured["params_sha256"]
    keys = {key for line in lines for key in line}
    for name in ("grad_stats", "direction_variance", "hessian_top", "step_stats"):
        assert f"instr/{name}/cost/seconds" in keys, name
    assert any(key.startswith("instr/grad_stats/nvar/") for key in keys)
    byproduct = [line["instr/grad_stats/byproduct"] for line in lines if "instr/grad_stats/byproduct" in line]
    # The trainer reports the backward's seed, so grad_stats reads the training backward (no batch norm).
    assert byproduct and all(value == (0.0 if case == "adam_batch_norm" else 1.0) for value in byproduct)


def instrument_series(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k.startswith("instr/") and "seconds" not in k} for line in lines]


def test_kill_9_and_resume_with_instruments_is_bit_identical(tmp_path, plugin_env):
    steps = ["task=toy", "task.batch_size=16", "task.samples=512", "task.delay=0.01", "optim=sgd_c",
             "optim.lr=0.05", "train.steps=24", "train.log_every=1", "train.eval_every=10",
             "train.checkpoint_every=7", "log.progress=never", "instruments.every=3"]
    names = "instruments=[grad_stats,direction_variance,hessian_top,step_stats]"

    def start(run_dir, *extra):
        command = [sys.executable, "-m", "optimlab", "train", *steps, *extra, f"run_dir={run_dir}"]
        return subprocess.Popen(command, env=plugin_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    killed = tmp_path / "killed"
    process = start(killed, names)
    deadline = time.time() + 120
    while not (killed / "metrics.jsonl").exists() or '"step": 11' not in (killed / "metrics.jsonl").read_text():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resumed = start(killed, names)
    for name, extra in (("plain", []), ("reference", [names])):  # in this process meanwhile
        train(load_config([*steps, *extra, f"run_dir={tmp_path / name}"]))
    assert resumed.wait(timeout=180) == 0, resumed.communicate()
    assert "resumed from step 7" in resumed.communicate()[1]
    sha = [json.loads((d / "summary.json").read_text())["params_sha256"] for d in
           (tmp_path / "plain", tmp_path / "reference", killed)]
    assert sha[0] == sha[1] == sha[2]
    assert instrument_series(killed) == instrument_series(tmp_path / "reference")


def test_cli_run_logs_per_layer_series(tmp_path, plugin_env, capsys):
    run_dir = tmp_path / "cli"
    command = [sys.executable, "-m", "optimlab", "train", "task=toy", "optim=adam", "train.steps=6",
               "train.log_every=3", "log.progress=never", "instruments=[grad_stats,step_stats]",
               "instruments.every=3", f"run_dir={run_dir}"]
    done = subprocess.run(command, env=plugin_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    keys = {key for line in (run_dir / "metrics.jsonl").read_text().splitlines() for key in json.loads(line)}
    assert {"instr/grad_stats/var/1.weight", "instr/grad_stats/nvar", "instr/step_stats/update_ratio/4.bias",
            "instr/step_stats/distance"} <= keys
    capsys.readouterr()
    assert main(["list", "instruments"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "direction_variance", "grad_stats", "hessian_top", "step_stats"]
    assert main(["train", "task=toy", "instruments=[grad_stat]", f"run_dir={tmp_path / 'bad'}"]) == 2
    assert "instruments.names" in capsys.readouterr().err
