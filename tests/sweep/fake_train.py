"""A stand-in for `optimlab train` that keeps its run-directory contract and exit codes, in milliseconds.

    python fake_train.py RUN_DIR MODE [STEPS]

Modes: ok | crash (exit 1 with a failed summary) | die (SIGKILL itself half way on the first attempt) |
badinput (exit 2, writes nothing) | slow (long steps, to be interrupted). It takes the same fcntl lock as
the trainer, checkpoints every 5 steps, resumes from its last checkpoint, and on SIGTERM, SIGINT (Ctrl-C)
or SIGUSR1 writes a checkpoint, records `interrupted` and exits 75. summary.json also records `resumed_from`, the pid and OMP_NUM_THREADS.
"""

import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path


def write_summary(run_dir: Path, data: dict) -> None:
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, run_dir / "summary.json")


def main() -> int:
    run_dir, mode = Path(sys.argv[1]), sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    if mode == "badinput":
        print("optimlab train: error: config key 'x': bad", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"optimlab train: error: run directory {run_dir} is in use by another process", file=sys.stderr)
        return 2
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    done = [int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.pt")]
    start = max(done, default=0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    base = {"steps": steps, "resumed_from": start, "pid": os.getpid(), "threads": os.environ.get("OMP_NUM_THREADS"),
            "started": time.time()}
    write_summary(run_dir, {**base, "status": "running", "step": start})
    delay = 0.1 if mode == "slow" else 0.01
    for step in range(start, steps):
        if stop:
            (checkpoints / f"step-{step}.pt").write_text("ckpt")
            write_summary(run_dir, {**base, "status": "interrupted", "step": step})
            return 75
        if mode == "crash" and step == steps // 2:
            write_summary(run_dir, {**base, "status": "failed", "step": step, "error": "RuntimeError: boom"})
            print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr)
            return 1
        if mode == "die" and start == 0 and step == steps // 2:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(delay)
        if (step + 1) % 5 == 0:
            (checkpoints / f"step-{step + 1}.pt").write_text("ckpt")
    sha = hashlib.sha256(run_dir.name.encode()).hexdigest()
    write_summary(run_dir, {**base, "status": "completed", "step": steps, "params_sha256": sha,
                            "finished": time.time()})
    print(f"completed: {steps}/{steps} steps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
