"""`optimlab.train.train(cfg)` with a Config built in Python gives the run the command line gives;
`load_run` restores the trained model and optimizer from the last checkpoint."""

import torch
import yaml

from optimlab.cli import main
from optimlab.config import Config, LogConfig, OptimConfig, TaskConfig, TrainConfig, config_hash, load_config
from optimlab.train import load_run, train


def _direct(run_dir):
    return Config(
        task=TaskConfig(name="toy", batch_size=16), optim=OptimConfig(name="sgd", kwargs={"lr": 0.1}),
        train=TrainConfig(steps=20, eval_every=10, checkpoint_every=10, log_every=5),
        log=LogConfig(progress="never"), run_dir=str(run_dir),
    )


def test_a_directly_built_config_trains_as_the_cli_would(tmp_path, capsys):
    summary = train(_direct(tmp_path / "py"))
    argv = ["train", "task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.1", "train.steps=20",
            "train.eval_every=10", "train.checkpoint_every=10", "train.log_every=5", "log.progress=never",
            f"run_dir={tmp_path / 'cli'}"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"run directory: {tmp_path / 'cli'}" in out and f"({tmp_path / 'cli'})" in err.splitlines()[-1]
    py = yaml.safe_load((tmp_path / "py" / "config.yaml").read_text())
    cli = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert {**py, "run_dir": None} == {**cli, "run_dir": None}
    assert py["optim"]["momentum"] == 0 and py["optim"]["nesterov"] is False  # the optimizer's defaults filled in
    cli_summary = yaml.safe_load((tmp_path / "cli" / "summary.json").read_text())
    assert summary["config_hash"] == cli_summary["config_hash"]
    assert config_hash(load_config(argv[1:])) == summary["config_hash"]


def test_load_run_restores_model_and_optimizer(tmp_path):
    train(_direct(tmp_path / "run"))
    run = load_run(tmp_path / "run")
    assert run.step == 20 and run.summary["status"] == "completed" and not run.model.training
    saved = torch.load(run.checkpoint, weights_only=True)
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name])
    assert run.optimizer.state_dict()["param_groups"][0]["lr"] == 0.1
    assert run.cfg.optim.kwargs["lr"] == 0.1
    assert run.model(run.task.val.tensors[0][:4]).shape[0] == 4


def test_progress_bar_auto_shows_in_a_jupyter_kernel(monkeypatch):
    import sys
    import types

    from optimlab.train.loggers import in_notebook, progress_enabled

    class ZMQInteractiveShell:  # the class name IPython's kernel shell has
        pass

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert not in_notebook() and not progress_enabled(LogConfig())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    assert in_notebook() and progress_enabled(LogConfig())


def test_deterministic_training_is_recorded_and_off_by_default_keeps_hashes(tmp_path):
    cfg = _direct(tmp_path / "det")
    plain_hash = config_hash(load_config(["task=toy", "task.batch_size=16"]))
    assert config_hash(load_config(["task=toy", "task.batch_size=16", "train.deterministic=false"])) == plain_hash
    assert config_hash(load_config(["task=toy", "task.batch_size=16", "train.deterministic=true"])) != plain_hash
    try:
        summary = train(Config(**{**cfg.__dict__, "train": TrainConfig(steps=10, deterministic=True)}))
        assert summary["deterministic"] is True and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    assert train(_direct(tmp_path / "plain"))["deterministic"] is False
