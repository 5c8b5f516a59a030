"""A full or read-only disk is one line, keeps the last good checkpoint, and a re-run after freeing space is exact.

The tests mount a small tmpfs (root in a Linux container); they skip, with the reason, where that is refused.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimlab.config import load_config
from optimlab.errors import RunFailed
from optimlab.train import run as run_module
from optimlab.train import train
from optimlab.train.hooks import StepHook


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount_tmpfs(mount, "2m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class AtStep(StepHook):
    """Runs `action` after the given step (to change the disk under a running run)."""

    name = "at_step"

    def __init__(self, step, action):
        self.step, self.action = step, action

    def after_step(self, info):
        if info.step + 1 == self.step:
            self.action()


def with_hook(monkeypatch, hook):
    monkeypatch.setattr(run_module, "HOOK_BUILDERS", [*run_module.HOOK_BUILDERS, lambda cfg, ctx: [hook]])


def landed(checkpoint: Path, timeout: float = 60.0) -> None:
    """Wait until `checkpoint` is on disk: checkpoints are written on a writer thread while training goes
    on, so the disk is changed under the run only once the last good checkpoint has landed."""
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert time.monotonic() < deadline, f"{checkpoint} was not written within {timeout} s"
        time.sleep(0.01)


def fill(disk: Path, leave: int) -> Path:
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as file:
        file.truncate(0)
        file.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return filler


def overrides(toy_overrides, run_dir):
    return [*(o for o in toy_overrides if not o.startswith("run_dir")), f"run_dir={run_dir}", "train.log_every=10"]


def test_disk_full_is_one_line_and_a_rerun_after_freeing_space_is_exact(small_disk, tmp_path, toy_overrides, monkeypatch):
    run_dir = small_disk / "run"
    reference = train(load_config(overrides(toy_overrides, tmp_path / "reference")))
    with_hook(monkeypatch, AtStep(15, lambda: landed(run_dir / "checkpoints" / "step-10.pt") or fill(small_disk, leave=4096)))
    with pytest.raises(RunFailed) as failure:
        train(load_config(overrides(toy_overrides, run_dir)))
    message = str(failure.value)
    assert "\n" not in message and "No space left on device" in message
    # Which write meets the full disk first (the checkpoint of step 20 on the writer thread, or the run's own
    # metrics or summary) depends on the threads' timing; a failed checkpoint names the last good one.
    if message.startswith("cannot write checkpoint"):
        assert message.startswith(f"cannot write checkpoint {run_dir / 'checkpoints' / 'step-20.pt'}")
        assert message.endswith("last good checkpoint: step-10")
    else:
        assert message.startswith(f"cannot write {run_dir}")
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["step-10.pt"]  # intact

    monkeypatch.undo()
    (small_disk / "filler").unlink()
    resumed = train(load_config(overrides(toy_overrides, run_dir)))
    assert resumed["params_sha256"] == reference["params_sha256"]


def test_read_only_checkpoints_mid_run_records_failed_with_the_message(small_disk, toy_overrides, monkeypatch):
    run_dir = small_disk / "run"
    checkpoints = run_dir / "checkpoints"

    def make_read_only():  # a read-only bind mount over the checkpoint folder (the run's other files stay open)
        subprocess.run(["mount", "--bind", str(checkpoints), str(checkpoints)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(checkpoints)], check=True)

    with_hook(monkeypatch, AtStep(15, lambda: landed(checkpoints / "step-10.pt") or make_read_only()))
    try:
        with pytest.raises(RunFailed) as failure:
            train(load_config(overrides(toy_overrides, run_dir)))
    finally:
        subprocess.run(["umount", str(checkpoints)], capture_output=True)
    message = str(failure.value)
    assert "Read-only file system" in message and "last good checkpoint: step-10" in message and "\n" not in message
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == message
    assert (checkpoints / "step-10.pt").exists()


def test_cli_on_a_read_only_disk_is_one_line(small_disk, toy_overrides, plugin_env):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    command = [sys.executable, "-m", "optimlab", "train", *overrides(toy_overrides, small_disk / "run")]
    done = subprocess.run(command, env=plugin_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "cannot be created: Read-only file system" in done.stderr
