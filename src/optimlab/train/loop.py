"""The training loop: `train(cfg)` trains one run and writes its run directory (docs/run-directory.md).

Per step: sample the global batch and take this rank's slice; step hooks before the backward; the gradient
(microbatched, AMP, DDP); clipping; step hooks after the backward; the optimizer step; step hooks after it;
the schedule. Every `log_every` steps the mean training loss, the pre-clip gradient norm and every
measurement (`optim/...`, `hyper/...`, `instr/...`) are logged and divergence is checked; every
`eval_every` steps (and at step 0 and the end) the validation split is evaluated; every `checkpoint_every`
steps a checkpoint is written. A checkpoint holds every piece `Run.state` declares, so a resumed run
continues bit-identically. SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) checkpoint and stop with status
`interrupted` (exit code 75 from the CLI).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
from typing import Any

from optimlab import rundir
from optimlab.config import Config, default_run_dir
from optimlab.errors import ConfigError, RunFailed
from optimlab.rundir import MetricsFile, RunLock
from optimlab.train.background_writes import BackgroundWrites
from optimlab.train.checkpoint import resume_latest, serialize_checkpoint, write_checkpoint
from optimlab.train.distributed import init_world, resolve_device
from optimlab.train.evaluate import evaluate, is_better
from optimlab.train.gradients import clip_and_measure
from optimlab.train.loggers import build_loggers
from optimlab.train.run import build_run, first_nonfinite, step_losses, upgrade_checkpoint
from optimlab.train.run_record import RunRecord
from optimlab.train.state import Progress, seed_everything

STOP_EXIT_CODE = rundir.EXIT_INTERRUPTED
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_STOP = {"requested": False}


def request_stop(*_: Any) -> None:
    """Ask the running loop to checkpoint and return at the end of the current step (signal-safe)."""
    _STOP["requested"] = True


def train(cfg: Config, *, handle_signals: bool = False) -> dict[str, Any]:
    """Train one run to completion, divergence or a stop request; returns its summary.

    `cfg` is a validated config, as `load_config` and `from_tree` build them; a `Config` built directly in
    Python goes through `optimlab.train.train`, which normalises and validates it first (config.normalize).
    """
    world = init_world(cfg.train.device)
    device = resolve_device(cfg.train.device, world)
    cfg = dataclasses.replace(cfg, run_dir=str(cfg.run_dir or default_run_dir(cfg)))
    record = RunRecord(cfg, writes=world.is_main)
    _STOP["requested"] = False

    # Set-up: everything that can fail on bad input happens before anything is written.
    if cfg.train.resume:
        record.check_resumable()
        if (done := record.finished()) is not None:
            return done
    seed_everything(cfg.seed)
    run = build_run(cfg, device, world)
    model, optimizer, task = run.model, run.optimizer, run.task
    run.optimizer.zero_grad(set_to_none=True)  # torch imports its compiler stack here (seconds): before the clock
    record.start_clock()
    progress, window = Progress(), []  # window: (loss sum, count) of each step since the last log, on the device
    metrics = MetricsFile(record.path / rundir.METRICS)
    state = run.state(progress, window, metrics, lambda: record.elapsed(progress))
    lock, loggers = RunLock(record.path) if world.is_main else None, []
    if lock:
        lock.acquire()
    if handle_signals:
        previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}

    def log(values: dict[str, Any]) -> None:
        if world.is_main:
            line = {"step": progress.step, "time": round(record.elapsed(progress), 4), **values}
            metrics.write(line)
            for logger in loggers:
                logger.log(line)

    def evaluate_validation() -> None:
        values = evaluate(model, task, task.val, cfg.task.eval_batch_size, cfg.train.eval_batches, device, optimizer, "val")
        progress.last_eval = values
        if is_better(values, progress.best, task):
            progress.best = {"step": progress.step, **values}
        log(values)

    def checkpoint() -> None:
        if world.is_main:
            # The bytes and the summary are taken now (the next steps change the model); the files are written
            # and fsynced on the writer thread while training goes on.
            payload = serialize_checkpoint(state.state_dict())
            # At the last step the summary that ends the run follows at once (finish): no "running" one before it.
            last_step = progress.step == cfg.train.steps
            summary = None if last_step else record.summary(rundir.RUNNING, progress, task, model, device)
            step, last = progress.step, f"step-{saved_at[0]}" if saved_at[0] >= 0 else "none"

            def write() -> None:
                try:
                    write_checkpoint(record.checkpoints, step, payload, cfg.train.keep_checkpoints)
                except OSError as error:
                    path = record.checkpoints / f"step-{step}.pt"
                    raise RunFailed(f"cannot write checkpoint {path}: {error.strerror}; last good checkpoint: {last}") from None
                if summary is not None:
                    record.write_summary(summary)

            writes.submit(write)
        saved_at[0] = progress.step

    def finish(status: str) -> dict:
        writes.wait()  # every checkpoint is on disk before the summary says how the run ended
        return record.write_summary(record.summary(status, progress, task, model, device))

    saved_at = [-1]  # the step of the last checkpoint written (or handed to the writer) or loaded
    writes = BackgroundWrites()
    try:
        # Resume from the newest usable checkpoint, or start over.
        resumed = None
        if cfg.train.resume:
            resumed = resume_latest(record.checkpoints, lambda found: state.load_state_dict(upgrade_checkpoint(found)))
        if resumed is not None:
            saved_at[0] = progress.step
            if world.is_main:
                print(f"optimlab: resumed from step {progress.step} in {record.path}", file=sys.stderr)
        if world.is_main:
            if resumed is None:
                record.start_over()
            record.write_config()
            metrics.open(offset=resumed["metrics_offset"] if resumed is not None else 0)
            loggers = build_loggers(cfg, record.path, progress.step)
            summary = record.summary(rundir.RUNNING, progress, task, model, device)
            writes.submit(lambda: record.write_summary(summary))

        # The step loop.
        model.train()
        for step in range(progress.step, cfg.train.steps):
            if step % cfg.train.eval_every == 0:
                evaluate_validation()
            if _STOP["requested"]:
                checkpoint()
                return finish(rundir.INTERRUPTED)

            batch = run.next_batch(step)
            for hook in run.hooks:
                hook.before_backward(batch)
            run.zero_grad()
            run.backward(batch)
            log_now = len(window) + 1 == cfg.train.log_every or step + 1 == cfg.train.steps
            grad_norm = clip_and_measure(run.parameters, optimizer, run.scaler, cfg.train.clip_grad_norm, log_now)
            for hook in run.hooks:
                hook.after_backward(batch)
            run.optimizer_step(batch)
            for hook in run.hooks:
                hook.after_step(batch)
            if run.scheduler is not None:
                run.scheduler.step()
            window.append((batch.loss_sum, batch.count))
            progress.step = step + 1

            if log_now:
                losses = step_losses(window)
                mean = float(losses.mean())  # not finite when a step's loss is not: the check costs no more syncs
                bad = None if math.isfinite(mean) else first_nonfinite(losses)
                if bad is not None:
                    progress.diverged_step = progress.step - len(window) + bad + 1
                    log({"train/loss": float("nan"), "diverged_step": progress.diverged_step})
                    return finish(rundir.DIVERGED)
                progress.last_train_loss = mean
                log({"train/loss": progress.last_train_loss, "train/grad_norm": grad_norm, **run.measurements()})
                window.clear()
            if progress.step % cfg.train.checkpoint_every == 0:
                checkpoint()

        # Finish: a last checkpoint, validation and test.
        if saved_at[0] != progress.step:
            checkpoint()
        evaluate_validation()
        test = evaluate(model, task, task.test, cfg.task.eval_batch_size, cfg.train.eval_batches, device, optimizer, "test")
        progress.last_eval = {**progress.last_eval, **test}
        log(test)
        return finish(rundir.COMPLETED)
    except BaseException as error:
        failed_write = writes.close()  # a write in flight lands before the failure summary, not over it
        if isinstance(error, OSError):  # the run directory cannot be written: one line, not a traceback
            # A full disk fails the checkpoint on the writer thread, then the loop's own next write: the
            # checkpoint's failure came first, and it names the last good checkpoint.
            error = (failed_write if isinstance(failed_write, RunFailed)
                     else RunFailed(f"cannot write {error.filename or record.path}: {error.strerror or error}"))
        if world.is_main and not isinstance(error, ConfigError):
            record.write_failure(rundir.INTERRUPTED if isinstance(error, KeyboardInterrupt) else rundir.FAILED,
                                 error, progress, task, model, device)
        if isinstance(error, RunFailed):
            raise error from None
        raise
    finally:
        writes.close()
        metrics.close()
        for logger in loggers:
            logger.close()
        if lock:
            lock.release()
        if handle_signals:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


__all__ = ["STOP_EXIT_CODE", "request_stop", "train"]
