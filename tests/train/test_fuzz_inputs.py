"""Fuzzed bad input: every invalid invocation is one line on stderr, exit code 2, and nothing written.

The cases are generated from a few tables (unknown keys, wrong types, out-of-range values, malformed
tokens, contradictions, bad files, bad sweep specs, bad `compare` arguments) and run in-process through
`optimlab.cli.main`, so the whole suite of several hundred invocations takes seconds. "Nothing written"
is checked on the whole temporary directory: every path and every byte are the same afterwards, which
covers both a fresh run directory (it must not appear) and an existing run (it must not change).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from optimlab.cli import main

TOY_TASK_FILE = str(Path(__file__).parent / "toy_task.py")  # as conftest.py registers it

BASE = ["task=toy", "optim=sgd", "optim.lr=0.1", "train.steps=2", "log.progress=never"]
FILE_BASE = ["task=toy", "train.steps=2", "log.progress=never"]  # with --config: the file sets the rest

UNKNOWN_KEYS = [
    "foo=1", "optim.lrr=0.1", "trian.steps=5", "train.stpes=5", "task.nosuch=1", "schedule.gama=0.5",
    "hyper.mu_=1", "log.tensorbord=true", "instruments.evry=5", "optim=adamm", "task=toyy", "schedule=cosin",
    "hyper=marth", "instruments=[nosuch]", "train.amp=fp8", "log.progress=sometimes", "log.wandb_mode=on",
    "hyper.variant=x", "instruments.compat=biased", "optim.no_decay=[weights]",
    "Seed=1", "optim.LR=0.1", "train.device=tpu", "train.device=cuda:x",
]
INT_KEYS = ["seed", "task.batch_size", "train.steps", "train.log_every", "train.eval_every",
            "train.checkpoint_every", "train.keep_checkpoints", "schedule.warmup_steps", "schedule.T_0",
            "instruments.every", "train.microbatch_size"]
BAD_INTS = ["abc", "1.5", "[1]", "{a: 1}", "true"]
FLOAT_KEYS = ["optim.lr", "optim.weight_decay", "optim.momentum", "schedule.gamma", "schedule.min_lr",
              "train.clip_grad_norm", "hyper.hyper_lr", "hyper.holdout_fraction", "hyper.mu"]
BAD_FLOATS = ["abc", "[1]", "true", "{a: 1}"]
BOOL_KEYS = ["train.resume", "log.tensorboard", "log.wandb", "train.length_bucketing", "hyper.first_order",
             "optim.nesterov"]
BAD_BOOLS = ["2", "0.5", "abc", "[true]"]
RANGES = [
    "optim.lr=-1", "optim.lr=1e400", "optim.lr=.inf", "optim.lr=-.inf", "optim.lr=.nan", "optim.lr=" + "9" * 10000,
    "optim.weight_decay=.inf", "optim.weight_decay=-1", "optim.weight_decay=.nan", "optim.momentum=-0.5",
    "optim.momentum=.nan", "optim.momentum=[0.9]", "optim.dampening=.nan",
    "schedule.gamma=.nan", "schedule.gamma=-1", "schedule.gamma=0", "schedule.gamma=.inf",
    "schedule.min_lr=-1", "schedule.min_lr=.nan", "schedule.min_lr=.inf",
    "train.clip_grad_norm=.nan", "train.clip_grad_norm=0", "train.clip_grad_norm=-1", "train.clip_grad_norm=.inf",
    "seed=-1", "seed=99999999999999999999", f"seed={2**64}", "seed=" + "1" * 5000,
    "task.batch_size=0", "task.batch_size=-1", "task.batch_size=100000", "task.eval_batch_size=0",
    "train.steps=-1", "train.microbatch_size=0", "train.eval_batches=0", "train.keep_checkpoints=0",
    "hyper.holdout_fraction=0", "hyper.holdout_fraction=1", "hyper.holdout_fraction=.nan",
    "hyper.hyper_lr=.nan", "hyper.hyper_lr=-1", "hyper.mu=2", "hyper.mu=.nan", "hyper.alpha=-1",
    "hyper.lr_min=-1", "hyper.lr_max=-1", "hyper.lr_max=.nan", "hyper.val_every=0",
    "schedule.warmup_steps=-1", "schedule.step_size=0", "schedule.milestones=[-5]", "schedule.milestones=[a]",
    "schedule.T_0=0", "schedule.T_mult=0", "instruments.every=0", "instruments.draws=1",
    "instruments.hessian_tol=.nan", "instruments.hessian_iterations=0", "instruments.start=-1",
    "task.dropout=.nan", "task.dropout=true", "task.samples=true",  # the task's own options
]
TOKENS = [
    "optim.lr=", "optim.lr=[", "optim.lr={", "optim.lr=]", "optim.lr=!!python/object:os.system",
    "optim.lr=!!binary aGVsbG8=", "optim.lr=!!set {a}", "=5", "optim.lr", "seed", "optim.lr=0.1=2",
    "optim.lr=*a", "optim.lr='", 'optim.lr="0.1', "..=1", "optim..lr=1", "train.steps.x=1", "train=5",
    "optim.lr=${oc.env:HOME}", "seed=${seed}", "train.steps=${train.nope}", "optim.lr=0.1 0.2",
    "task=[toy]", "optim={name: sgd}", "run_dir=[a]", "--bogus", "--config",
]
BETAS = ["optim.betas=[0.9]", "optim.betas=[0.9,0.99,0.999]", "optim.betas=[a,b]", "optim.betas=[1.5,0.9]",
         "optim.betas=[.nan,0.9]", "optim.betas=0.9", "optim.betas=[]", "optim.eps=-1", "optim.eps=.nan",
         "optim.amsgrad=2"]
CONFLICTS = [
    ["hyper=rtho", "hyper.mu=0.5"], ["hyper.lr_min=0.5", "hyper.lr_max=0.1"],
    ["schedule=step", "schedule.milestones=[10]", "schedule.step_size=5"],
    ["schedule=step", "schedule.milestones=[20,10]"],
]


def _train(*extra: str) -> list[str]:
    return ["train", *BASE, *extra]


def _cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(id, argv) pairs; files they name are written under `tmp` first."""
    run = f"run_dir={tmp / 'run'}"
    cases = []
    for item in UNKNOWN_KEYS + RANGES + TOKENS + BETAS:
        argv = _train(run, item) if not item.startswith("optim.betas") and "eps" not in item and "amsgrad" not in item \
            else _train(run, "optim=adam", item)
        cases.append((item[:60], argv))
    for key in INT_KEYS:
        cases += [(f"{key}={v}", _train(run, f"{key}={v}")) for v in BAD_INTS]
    for key in FLOAT_KEYS:
        cases += [(f"{key}={v}", _train(run, f"{key}={v}")) for v in BAD_FLOATS]
    for key in BOOL_KEYS:
        cases += [(f"{key}={v}", _train(run, f"{key}={v}")) for v in BAD_BOOLS]
    cases += [(" ".join(items), _train(run, *items)) for items in CONFLICTS]

    # Run directories that cannot be created or hold something else.
    (tmp / "a-file").write_text("not a directory\n")
    existing = tmp / "existing"
    assert main(_train(f"run_dir={existing}", "train.steps=2")) == 0
    cases += [
        ("run_dir under /proc", _train("run_dir=/proc/optimlab-fuzz/run")),
        ("run_dir on a file", _train(f"run_dir={tmp / 'a-file'}")),
        ("run_dir under a file", _train(f"run_dir={tmp / 'a-file' / 'run'}")),
        ("run_dir /dev/null", _train("run_dir=/dev/null")),
        ("existing run, other lr", _train(f"run_dir={existing}", "optim.lr=0.2")),
        ("existing run, other seed", _train(f"run_dir={existing}", "seed=3")),
        ("existing run, bad lr", _train(f"run_dir={existing}", "optim.lr=.nan")),
    ]

    # Config files.
    files = {
        "directory": None, "binary": b"\x00\x81\xfe\xff" * 64, "list": b"- 1\n- 2\n", "scalar": b"5\n",
        "invalid": b"optim: {lr: [\n", "train-5": b"train: 5\n", "bad-lr": b"optim:\n  lr: abc\n",
        "python-tag": b"optim:\n  lr: !!python/object/apply:os.system [echo hi]\n",
        "unknown": b"trian:\n  steps: 5\n", "nan-seed": b"seed: .nan\n", "bool-int": b"train:\n  resume: 2\n",
        "neg-gamma": b"schedule:\n  gamma: -1\n", "inf-lr": b"optim:\n  lr: .inf\n",
    }
    for name, content in files.items():
        path = tmp / f"config-{name}.yaml"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        extra = ["train.steps=3"] if name == "train-5" else []
        cases.append((f"--config {name}", ["train", "--config", str(path), *FILE_BASE, run, *extra]))
    cases.append(("--config missing", ["train", "--config", str(tmp / "missing.yaml"), *FILE_BASE, run]))

    # Sweep specs.
    root = f"{tmp / 'sweeps'}"
    good_base = "base: {task: toy, optim: sgd, train.steps: 2, log.progress: never}\n"
    specs = {
        "not-mapping": "- 1\n", "unknown-key": "name: s\ngrids: {optim.lr: [0.1]}\n", "no-grid": "name: s\n",
        "bad-name": "name: 'a b'\ngrid: {optim.lr: [0.1]}\n", "bad-seeds": "name: s\ngrid: {optim.lr: [0.1]}\nseeds: -1\n",
        "seeds-text": "name: s\ngrid: {optim.lr: [0.1]}\nseeds: abc\n",
        "empty-grid": "name: s\ngrid: {optim.lr: []}\n",
        "unknown-config-key": f"name: s\n{good_base}grid: {{optim.lrr: [0.1]}}\n",
        "nan-lr": f"name: s\n{good_base}grid: {{optim.lr: [.nan]}}\n",
        "neg-lr": f"name: s\n{good_base}grid: {{optim.lr: [0.1, -1]}}\n",
        "betas": f"name: s\n{good_base}grid: {{optim: [adam], optim.betas: [[0.9]]}}\n",
        "bool-int": f"name: s\n{good_base}grid: {{train.resume: [2]}}\n",
        "train-5": "name: s\nbase: {train: 5}\ngrid: {optim.lr: [0.1]}\n",
        "python-tag": "name: s\ngrid: {optim.lr: [!!python/object/apply:os.system [echo]]}\n",
        "invalid-yaml": "name: s\ngrid: {optim.lr: [\n", "binary": None,
        "seed-and-seeds": f"name: s\n{good_base}grid: {{seed: [1]}}\nseeds: 2\n",
    }
    for name, text in specs.items():
        path = tmp / f"spec-{name}.yaml"
        if text is None:
            path.write_bytes(b"\x00\xff" * 50)
        else:
            path.write_text(text)
        cases.append((f"sweep {name}", ["sweep", str(path), "--root", root, "--no-progress"]))
    ok_spec = tmp / "spec-ok.yaml"
    ok_spec.write_text(f"name: ok\n{good_base}grid: {{optim.lr: [0.1]}}\n")
    cases += [
        ("sweep spec directory", ["sweep", str(tmp / "config-directory.yaml"), "--root", root]),
        ("sweep no such spec", ["sweep", "no-such-sweep", "--root", root]),
        ("sweep --workers 0", ["sweep", str(ok_spec), "--workers", "0", "--root", root]),
        ("sweep --backend nosuch", ["sweep", str(ok_spec), "--backend", "nosuch", "--root", root]),
        ("sweep override nan", ["sweep", str(ok_spec), "optim.lr=.nan", "--root", root]),
        ("sweep override bool", ["sweep", str(ok_spec), "train.resume=2", "--root", root]),
    ]

    # compare.
    where = [f"root={tmp / 'cmp'}", f"out={tmp / 'cmp-out'}", "task=toy", "train.steps=2"]
    for item in ["optims=[nosuch]", "seeds=-1", "seeds=abc", "lrs=[-1]", "lrs=[.nan]", "workers=0", "optims=[]",
                 "bogus=1", "optim.lr=0.1", "train.clip_grad_norm=.nan", "task=nosuch", "lrs={nosuch: [0.1]}",
                 "progress=2", "optims=[sgd,sgd]", "train.resume=2", "backend=nosuch", "optim.betas=[0.9]"]:
        cases.append((f"compare {item}", ["compare", "optims=[sgd]", *where, item]))
    cases += [("list bogus", ["list", "bogus"]), ("unknown command", ["trian"])]
    return cases


def _snapshot(root: Path) -> dict[str, bytes | None]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def _restore(root: Path, before: dict, after: dict) -> None:
    for path in sorted(set(after) - set(before), reverse=True):  # children before their folders
        full = root / path
        if full.is_dir() and not full.is_symlink():
            shutil.rmtree(full, ignore_errors=True)
        else:
            full.unlink(missing_ok=True)
    for path, content in before.items():
        if content is not None and after.get(path) != content:
            (root / path).write_bytes(content)


def run_fuzz(tmp: Path, capsys) -> list[str]:
    """Run every case; return one line per failure (empty when all hold)."""
    failures = []
    cases = _cases(tmp)
    capsys.readouterr()
    before = _snapshot(tmp)
    for name, argv in cases:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own exit
            code = exit_.code
        except BaseException as error:  # noqa: BLE001 (a traceback is what this test looks for)
            code = f"raised {type(error).__name__}: {str(error)[:80]}"
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in err:
            problems.append("traceback")
        after = _snapshot(tmp)
        if after != before:
            changed = sorted(set(after) ^ set(before) | {k for k in after if k in before and after[k] != before[k]})
            problems.append(f"wrote {changed[:3]}")
            _restore(tmp, before, after)  # so that what one case wrote cannot mask the next
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {lines[-1][:150] if lines else ''}")
    return failures, len(cases)


def test_every_bad_invocation_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIMLAB_PLUGINS", TOY_TASK_FILE)
    failures, count = run_fuzz(tmp_path, capsys)
    assert count >= 150
    assert not failures, f"{len(failures)} of {count} bad invocations misbehaved:\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c.optim.kwargs.update(lr=float("nan")), "optim.lr"),
        (lambda c: c.optim.kwargs.update(betas=(0.9,)), "optim.betas"),
        (lambda c: setattr(c.train, "resume", 2), "train.resume"),
        (lambda c: setattr(c.train, "clip_grad_norm", float("nan")), "train.clip_grad_norm"),
        (lambda c: setattr(c, "seed", 2**70), "seed"),
        (lambda c: setattr(c.schedule, "gamma", -1.0), "schedule.gamma"),
        (lambda c: (setattr(c.hyper, "name", "rtho"), setattr(c.hyper, "mu", 0.5)), "hyper.mu"),
    ],
)
def test_train_refuses_a_bad_config_built_in_python(tmp_path, change, key):
    """`optimlab.train.train(cfg)` checks a Config built in Python as the command line checks its input."""
    from optimlab.config import load_config
    from optimlab.errors import ConfigError
    from optimlab.train import train

    cfg = load_config([*BASE, f"run_dir={tmp_path / 'run'}"])
    change(cfg)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_run_directory_in_use_is_one_line_and_left_alone(tmp_path, capsys):
    """A second trainer on a run directory another one holds (its flock) exits 2 and changes nothing."""
    from optimlab.rundir import RunLock

    run = tmp_path / "run"
    assert main(_train(f"run_dir={run}")) == 0
    capsys.readouterr()
    before = _snapshot(tmp_path)
    holder = RunLock(run)
    holder.acquire()
    try:
        code = main(_train(f"run_dir={run}", "train.steps=4"))
    finally:
        holder.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "in use by another process" in err[0]
    assert _snapshot(tmp_path) == before
