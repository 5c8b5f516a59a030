"""A stand-in for `optimlab train` whose result depends on the learning rate, for `compare extend=N`.

    python fake_lr_train.py RUN_DIR TASK OPTIM LR SEED PEAK [--touch PATH] [--wait PATH]

Writes the three files a report reads (config.yaml, metrics.jsonl, summary.json), in milliseconds: the
validation accuracy is 0.9 - 0.05 * log10(LR / PEAK) ** 2, highest at PEAK, so a grid that does not
bracket PEAK has its best value on the edge nearest to it. `--touch PATH` creates PATH first; `--wait PATH`
waits for PATH to exist first (failing with exit code 1 after 60 s).
"""

import json
import math
import sys
import time
from pathlib import Path


def main() -> int:
    run_dir, task, optim, lr, seed, peak = sys.argv[1:7]
    options = dict(zip(sys.argv[7::2], sys.argv[8::2]))
    if "--touch" in options:
        Path(options["--touch"]).touch()
    if "--wait" in options:
        deadline = time.monotonic() + 60
        while not Path(options["--wait"]).exists():
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.02)
    run_dir, lr, seed, peak = Path(run_dir), float(lr), int(seed), float(peak)
    run_dir.mkdir(parents=True, exist_ok=True)
    val = 0.9 - 0.05 * math.log10(lr / peak) ** 2 + 0.001 * seed
    config = {"seed": seed, "task": {"name": task}, "optim": {"name": optim, "lr": lr}}
    (run_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    lines = [{"step": 0, "time": 0.0, "val/accuracy": 0.1},
             {"step": 10, "time": 0.1, "train/loss": 0.5, "val/accuracy": val, "val/loss": 1 - val,
              "test/accuracy": val, "test/loss": 1 - val}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {"val/accuracy": val, "val/loss": 1 - val, "test/accuracy": val, "test/loss": 1 - val}
    summary = {"status": "completed", "step": 10, "steps": 10, "main_metric": "accuracy", "higher_is_better": True,
               "final": final, "best": final, "wall_time": 0.1}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
