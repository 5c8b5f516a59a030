"""Wall time of one training run, alone and next to one busy process, under OpenMP thread settings.

    PYTHONPATH=src python benchmarks/threads.py [--repeats 3] [--steps 300]

Each variant runs `optimlab train` in a fresh process (OpenMP reads its settings when torch loads):

    default   torch's defaults: one thread per core, GNU OpenMP's spin-then-sleep waiting
    passive   OMP_WAIT_POLICY=PASSIVE: waiting threads sleep at once (what `optimlab` sets by default)
    one       OMP_NUM_THREADS=1

"busy" runs the same next to `python -c "while True: pass"`. Variants are interleaved and repeated, and the
medians printed, because the machine may be shared. Prints `RESULT name=value ...` last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Runs train_main directly, not through `optimlab`'s entry point, so "default" is torch's own default.
RUN = "import sys; from optimlab.train.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
VARIANTS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
}


def one_run(variant: str, steps: int, folder: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env.update(VARIANTS[variant])
    args = ["task=mnist1d_mlp", "optim=adam", f"train.steps={steps}", "train.eval_every=100000",
            "train.checkpoint_every=100000", "log.progress=never", "train.resume=false", f"run_dir={folder}"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for load in ("quiet", "busy"):
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
                try:
                    for variant in VARIANTS:
                        seconds = one_run(variant, args.steps, f"{folder}/{variant}")
                        times.setdefault(f"{load}_{variant}", []).append(seconds)
                        print(f"{load:5s} {variant:8s} {seconds:7.2f} s", flush=True)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("RESULT " + " ".join(f"{name}_s={value:.2f}" for name, value in medians.items()))


if __name__ == "__main__":
    main()
