"""The cycle from the command line: meta-train, train with the result, evaluate it, run a baseline."""

import json

from optimlab.cli import main
from test_learned_metatrain import TINY


def test_meta_train_then_train_evaluate_and_baseline(tmp_path, capsys):
    run = tmp_path / "meta"
    assert main(["meta-train", *TINY, f"run_dir={run}"]) == 0
    assert (run / "weights.safetensors").is_file()

    train_dir = tmp_path / "train"
    common = ["task=logreg", "train.steps=10", "train.eval_every=5", "log.progress=never"]
    assert main(["train", *common, "optim=learned", f"optim.path={run}", f"run_dir={train_dir}"]) == 0
    assert json.loads((train_dir / "summary.json").read_text())["status"] == "completed"

    protocol = ["tasks=[logreg]", "repeats=2", "steps=10", "eval_every=5", "batch_size=32"]
    assert main(["evaluate", f"path={run}", *protocol, f"run_dir={tmp_path / 'eval'}"]) == 0
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    ((label, entry),) = report["results"]["logreg"].items()
    assert label.startswith("learned-") and len(entry["replicates"]["0"]) == 2
    assert (tmp_path / "eval" / "evaluation.md").read_text().startswith("| task |")

    assert main(["baseline", "optim=sgd", "lrs=[0.1,0.001]", *protocol, f"run_dir={tmp_path / 'base'}"]) == 0
    report = json.loads((tmp_path / "base" / "evaluation.json").read_text())
    assert report["results"]["logreg"]["best"] in ("sgd-lr0.1", "sgd-lr0.001")
    assert "<- best lr" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line(capsys):
    assert main(["meta-train", "strategy.epochs=0"]) == 2
    assert main(["meta-train", "policy=rnnprop", "policy.layerz=[3]"]) == 2
    assert main(["evaluate", "repeats=0"]) == 2
    assert main(["baseline", "optim=adamm"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("optimlab ") for line in lines)
    assert (
        "strategy.epochs" in lines[0] and "policy.layerz" in lines[1] and "repeats" in lines[2] and "adamm" in lines[3]
    )
