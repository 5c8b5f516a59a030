"""GPU paths (AMP bf16 and fp16 with a GradScaler); skipped cleanly without CUDA."""

import pytest
import torch

from optimlab.config import load_config
from optimlab.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_on_gpu_completes(toy_overrides, amp):
    summary = train(load_config([*toy_overrides, "train.device=cuda", f"train.amp={amp}"]))
    assert summary["status"] == "completed" and summary["device"].startswith("cuda")
    assert summary["final"]["train/loss"] < 1.0


def test_amp_is_off_on_cpu(tmp_path, toy_overrides):
    base = [o for o in toy_overrides if not o.startswith("run_dir")] + ["train.device=cpu"]
    plain = train(load_config([*base, f"run_dir={tmp_path / 'a'}"]))
    amp = train(load_config([*base, f"run_dir={tmp_path / 'b'}", "train.amp=bf16"]))
    assert amp["device"] == "cpu" and amp["params_sha256"] == plain["params_sha256"]
