"""Optimizer Amalgamation end to end at tiny size: the choice -> distillation cycle from the command line,
min-max distillation from the presets, and a distillation run stopped and resumed to the same weights."""

import hashlib
import json

import optimlab.learned as lo
from optimlab.cli import main
from optimlab.learned import metatrain
from optimlab.learned.metaconfig import load_meta_config
from optimlab.learned.metatrain import MetaTrainer, meta_train
from test_learned_metatrain import TINY


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_choice_then_distillation_then_train_from_the_cli(tmp_path):
    choice, student = tmp_path / "less_choice", tmp_path / "student"
    # Step 1, the original's `--presets=conv_train,cl_fixed --strategy=repeat --policy=less_choice` (tiny)
    assert (
        main(
            [
                "meta-train",
                "preset=less_choice",
                *TINY,
                "strategy.num_periods=2",
                "strategy.epochs=2",
                f"run_dir={choice}",
            ]
        )
        == 0
    )
    spec = lo.load(choice)
    assert spec.policy.name == "choice" and spec.policy.hparams["pool"] == "small"
    assert all("meta/imitation" not in r for r in _metrics(choice))
    # Step 2, `--presets=conv_train,less_choice,il_more --strategy=curriculum --policy=rnnprop`
    assert main(["meta-train", "preset=il_more", *TINY, "strategy.epochs=2", "distill=choice", f"distill.teacher={choice}",
                 f"run_dir={student}"]) == 0  # fmt: skip
    packaged = lo.load(student)
    assert packaged.policy.name == "rnnprop"
    distill = packaged.config["metadata"]["distill"]
    assert distill["name"] == "choice" and distill["teachers"] == [f"choice:{spec.sha256[:12]}"]
    records = [r for r in _metrics(student) if "meta/loss" in r]
    weights = {r["stage"]: r["meta/imitation_weight"] for r in records}
    assert weights == {0: 0.2, 1: 0.1}
    for r in records:
        if r["meta/skipped"] == 0.0:
            assert abs(r["meta/loss"] - (r["meta/meta_loss"] + r["meta/imitation_weight"] * r["meta/imitation"])) < 1e-5
    # Step 3: the distilled optimizer trains a model like any other.
    train = tmp_path / "train"
    common = ["task=logreg", "train.steps=10", "train.eval_every=5", "log.progress=never"]
    assert main(["train", *common, "optim=learned", f"optim.path={student}", f"run_dir={train}"]) == 0
    assert json.loads((train / "summary.json").read_text())["status"] == "completed"


def test_min_max_distillation_stopped_and_resumed_gives_the_same_weights(tmp_path, monkeypatch):
    overrides = [*TINY, "strategy.epochs=2", "preset=adam,rmsprop,il_more"]
    reference = meta_train(load_meta_config([*overrides, f"run_dir={tmp_path / 'ref'}"]))
    assert reference["status"] == "completed"
    assert lo.load(tmp_path / "ref").config["metadata"]["distill"]["teachers"] == ["adam", "rmsprop"]

    original, calls = MetaTrainer.meta_iteration, {"n": 0}

    def stop_mid_trajectory(self):
        record = original(self)
        calls["n"] += 1
        if calls["n"] == 5:  # stage 1 (depth 2), after the first truncation: teachers are carried
            metatrain.request_stop()
        return record

    monkeypatch.setattr(MetaTrainer, "meta_iteration", stop_mid_trajectory)
    run = tmp_path / "stopped"
    assert meta_train(load_meta_config([*overrides, f"run_dir={run}"]))["status"] == "interrupted"
    monkeypatch.setattr(MetaTrainer, "meta_iteration", original)
    assert meta_train(load_meta_config([*overrides, f"run_dir={run}"]))["status"] == "completed"
    assert _sha(run / "weights.safetensors") == _sha(tmp_path / "ref" / "weights.safetensors")
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
