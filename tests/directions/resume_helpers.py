"""In-process stop/resume: a run stopped between checkpoints resumes to the same bits as one never stopped."""

import json
from pathlib import Path

from optimlab.config import load_config
from optimlab.train import request_stop, train
from optimlab.train import run as run_module
from optimlab.train.hooks import StepHook


class StopAt(StepHook):
    name = "stop_at"

    def __init__(self, at):
        self.at = at

    def after_step(self, step):
        if self.at is not None and step.step + 1 == self.at:
            request_stop()


def stop_resume_matches(monkeypatch, tmp_path: Path, overrides: list[str], stop_at: int = 17) -> tuple[dict, dict]:
    """(reference summary, resumed summary) of the same config, the second stopped at `stop_at` and resumed."""
    reference = train(load_config([*overrides, f"run_dir={tmp_path / 'reference'}"]))
    monkeypatch.setattr(run_module, "HOOK_BUILDERS", [*run_module.HOOK_BUILDERS, lambda cfg, ctx: [StopAt(stop_at)]])
    interrupted = train(load_config([*overrides, f"run_dir={tmp_path / 'resumed'}"]))
    assert interrupted["status"] == "interrupted" and interrupted["step"] == stop_at
    monkeypatch.setattr(run_module, "HOOK_BUILDERS", run_module.HOOK_BUILDERS[:-1])
    resumed = train(load_config([*overrides, f"run_dir={tmp_path / 'resumed'}"]))
    return reference, resumed


def logged(run_dir: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]
