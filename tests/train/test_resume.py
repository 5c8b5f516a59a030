"""Exact resume: kill -9 at any step, SIGTERM, corrupted checkpoints, extension of a finished run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from optimlab.config import load_config
from optimlab.train import train

COMMON = [
    "task=toy", "task.batch_size=16", "task.samples=512", "optim=adam", "optim.lr=0.01",
    "train.log_every=1", "train.eval_every=10", "train.checkpoint_every=7", "log.progress=never",
]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return -1
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return max((r["step"] for r in lines), default=-1)


def start(run_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "optimlab", "train", *COMMON, *extra, f"run_dir={run_dir}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    deadline = time.time() + 60
    while last_logged_step(run_dir) < step:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)


# Adam, and a critical-gradient optimizer whose memory (slots, priorities, running sum) must resume too.
OPTIMIZERS = {"adam": [], "sgd_c": ["optim=sgd_c", "optim.momentum=0.9", "optim.topC=3", "optim.decay=0.9"]}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_sigkill_at_arbitrary_steps_then_resume_is_bit_identical(tmp_path, plugin_env, optimizer):
    steps = ["train.steps=60", "task.delay=0.01", *OPTIMIZERS[optimizer]]
    reference = start(tmp_path / "reference", plugin_env, *steps)
    assert reference.wait(timeout=120) == 0, reference.communicate()

    run_dir = tmp_path / "killed"
    for kill_at in (11, 30):  # between checkpoints (7, 14, ...), twice, then finish
        process = start(run_dir, plugin_env, *steps)
        wait_for_step(process, run_dir, kill_at)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert summary(run_dir)["status"] == "running"  # a killed run leaves its last word
    final = start(run_dir, plugin_env, *steps)
    assert final.wait(timeout=120) == 0, final.communicate()

    ours, theirs = summary(run_dir), summary(tmp_path / "reference")
    assert ours["status"] == "completed" and ours["step"] == 60
    assert ours["params_sha256"] == theirs["params_sha256"]
    # The metrics file describes one trajectory: every step logged exactly once, with identical losses.
    def train_losses(d):
        return [(r["step"], r["train/loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]
    assert train_losses(run_dir) == train_losses(tmp_path / "reference")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_checkpoints_and_exits_75_then_resumes(tmp_path, plugin_env, stop_signal):
    steps = ["train.steps=40", "task.delay=0.01"]
    run_dir = tmp_path / "run"
    process = start(run_dir, plugin_env, *steps)
    wait_for_step(process, run_dir, 12)
    process.send_signal(stop_signal)  # SIGINT is Ctrl-C: it must checkpoint too, not lose the steps since the last
    assert process.wait(timeout=60) == 75
    interrupted = summary(run_dir)
    assert interrupted["status"] == "interrupted"
    assert (run_dir / "checkpoints" / f"step-{interrupted['step']}.pt").exists()
    resumed = start(run_dir, plugin_env, *steps)
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"resumed from step {interrupted['step']}" in stderr

    reference = load_config([*COMMON, *steps, f"run_dir={tmp_path / 'reference'}", "task.delay=0"])
    assert summary(run_dir)["params_sha256"] == train(reference)["params_sha256"]


def test_extending_a_finished_run_equals_training_longer(tmp_path, toy_overrides):
    base = [o for o in toy_overrides if not o.startswith(("train.steps", "run_dir"))]
    short = train(load_config([*base, "train.steps=20", f"run_dir={tmp_path / 'a'}"]))
    assert short["status"] == "completed"
    again = train(load_config([*base, "train.steps=20", f"run_dir={tmp_path / 'a'}"]))
    assert again == short  # a finished run is not retrained
    extended = train(load_config([*base, "train.steps=40", f"run_dir={tmp_path / 'a'}"]))
    longer = train(load_config([*base, "train.steps=40", f"run_dir={tmp_path / 'b'}"]))
    assert extended["params_sha256"] == longer["params_sha256"]


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, toy_overrides, capsys):
    base = [o for o in toy_overrides if not o.startswith(("train.steps", "run_dir"))]
    run = [*base, f"run_dir={tmp_path / 'a'}"]
    train(load_config([*run, "train.steps=40"]))
    checkpoints = sorted((tmp_path / "a" / "checkpoints").glob("*.pt"))
    assert [p.name for p in checkpoints] == ["step-30.pt", "step-40.pt"]
    latest = tmp_path / "a" / "checkpoints" / "step-40.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as by a full disk
    (latest.parent / "step-40.pt.sha256").unlink()  # as written by older versions: no checksum to compare

    resumed = train(load_config([*run, "train.steps=50"]))
    assert "step-40.pt is unreadable" in capsys.readouterr().err
    reference = train(load_config([*base, "train.steps=50", f"run_dir={tmp_path / 'b'}"]))
    assert resumed["params_sha256"] == reference["params_sha256"]


def finished_run_with_checkpoints(tmp_path, toy_overrides, name="a"):
    base = [o for o in toy_overrides if not o.startswith(("train.steps", "run_dir"))]
    run = [*base, f"run_dir={tmp_path / name}"]
    train(load_config([*run, "train.steps=40"]))
    return base, run, tmp_path / name / "checkpoints"


def test_checkpoint_damaged_in_the_middle_is_detected_by_its_checksum(tmp_path, toy_overrides, capsys):
    base, run, folder = finished_run_with_checkpoints(tmp_path, toy_overrides)
    latest = folder / "step-40.pt"
    data = bytearray(latest.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)[: len(data[middle : middle + 4096])]  # zeros inside tensor data
    latest.write_bytes(bytes(data))

    resumed = train(load_config([*run, "train.steps=50"]))
    err = capsys.readouterr().err
    assert "step-40.pt does not match its checksum" in err and err.count("\n") == 2  # one line, and the resume line
    reference = train(load_config([*base, "train.steps=50", f"run_dir={tmp_path / 'b'}"]))
    assert resumed["params_sha256"] == reference["params_sha256"]


def test_checkpoint_of_another_structure_falls_back_and_leaves_the_run_untouched(tmp_path, toy_overrides, capsys):
    base, run, folder = finished_run_with_checkpoints(tmp_path, toy_overrides)
    other = torch.load(folder / "step-40.pt", weights_only=True)
    other["model"] = {"not_a_layer.weight": torch.zeros(3)}  # readable, with a valid checksum, but another model
    (folder / "step-40.pt").unlink()
    (folder / "step-40.pt.sha256").unlink()
    from optimlab.train.checkpoint import save_checkpoint

    save_checkpoint(folder, 40, other, keep=2)
    resumed = train(load_config([*run, "train.steps=50"]))
    assert "step-40.pt does not fit this run" in capsys.readouterr().err
    reference = train(load_config([*base, "train.steps=50", f"run_dir={tmp_path / 'b'}"]))
    assert resumed["params_sha256"] == reference["params_sha256"]


def test_no_usable_checkpoint_starts_over_and_keeps_the_bad_files(tmp_path, toy_overrides, capsys):
    base, run, folder = finished_run_with_checkpoints(tmp_path, toy_overrides)
    for path in folder.glob("*.pt"):
        path.write_bytes(b"garbage")
    restarted = train(load_config([*run, "train.steps=50"]))
    assert "no usable checkpoint: starting over" in capsys.readouterr().err
    assert sorted(p.name for p in folder.glob("*.unusable")) == [
        "step-30.pt.sha256.unusable", "step-30.pt.unusable", "step-40.pt.sha256.unusable", "step-40.pt.unusable",
    ]
    reference = train(load_config([*base, "train.steps=50", f"run_dir={tmp_path / 'b'}"]))
    assert restarted["params_sha256"] == reference["params_sha256"] and restarted["status"] == "completed"


def test_checkpoint_loads_with_weights_only(tmp_path, toy_overrides):
    train(load_config(toy_overrides))
    path = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "rng", "sampler", "progress", "metrics_offset"} <= state.keys()
