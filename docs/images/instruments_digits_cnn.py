"""Draws docs/images/instruments_digits_cnn.png from four runs (docs/instruments.md gives the commands):

    python docs/images/instruments_digits_cnn.py RUNS_ROOT docs/images/instruments_digits_cnn.png

RUNS_ROOT holds sgd-0, sgd-1, adam-0, adam-1; the x axis is each measurement's own step (instr/<name>/step)."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

root, out = Path(sys.argv[1]), sys.argv[2]
keys = [("instr/direction_variance/nvar", "direction_variance: nvar of the optimizer's direction"),
        ("instr/direction_variance/var", "direction_variance: var of the optimizer's direction"),
        ("instr/grad_stats/var", "var of the mini-batch gradient, two estimators")]
LINES = {2: (("sgd", "tab:blue", "instr/direction_variance/sgd_var", "SGD run: T=5 draws (direction_variance sgd_var)"),
             ("sgd", "tab:green", "instr/grad_stats/var", "SGD run: per-example, 1 batch (grad_stats var)"))}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for i, ((key0, title), ax) in enumerate(zip(keys, axes)):
    lines = LINES.get(i, (("sgd", "tab:blue", key0, "sgd"), ("adam", "tab:orange", key0, "adam")))
    for optim, color, key, label in lines:
        curves = []
        for run in sorted(root.glob(f"{optim}-*")):
            rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if key in r]
            prefix = key.rsplit("/", 1)[0]
            curves.append({r[f"{prefix}/step"]: r[key] for r in rows})
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        values = np.array([[c[s] for s in steps] for c in curves])
        ax.plot(steps, values.mean(0), color=color, label=label)
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.25)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    if key0.endswith("/var"):
        ax.set_yscale("log")
axes[0].legend()
axes[2].legend(fontsize=7)
fig.suptitle("digits_cnn, 2 seeds (mean, min-max): SGD momentum 0.9 (lr 0.05) vs Adam (lr 3e-3); T=5 draws of 128", fontsize=9)
fig.tight_layout()
fig.savefig(out, dpi=110)
