"""HF Trainer callbacks: metrics JSONL, a non-finite-loss guard, TensorBoard in the run directory."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stopped and kept the last good checkpoint."""


class MetricsJsonlCallback(TrainerCallback):
    """Appends every log event of the rank-0 worker as one JSON line (a resumed run continues the file).

    It also keeps the worker's phase times (process start, model loaded = this callback built,
    train begin, first and last step, train end) and writes them at the end of training to
    RUN/logs/worker_phases.json, which the driver merges into run_summary.json's `timings_s`."""

    def __init__(self, path: str | Path):
        from train.run_outputs import process_start_time

        self.path = Path(path)
        self.started = time.time()
        self.phases = {"process_start": process_start_time(), "model_loaded": self.started}

    def on_step_end(self, args, state, control, **kwargs):
        # Before the step's log and save: last_step ends at the optimizer step, train_end after
        # the final checkpoint is saved and reported.
        now = time.time()
        self.phases.setdefault("first_step", now)
        self.phases["last_step"] = now

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from train.run_outputs import WORKER_PHASES_FILE

        self.phases["train_end"] = time.time()
        target = self.path.parent / "logs" / WORKER_PHASES_FILE
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(self.phases), encoding="utf-8")
        except OSError:
            pass  # timings are a report: never fail a finished training over them

    def on_train_begin(self, args, state, control, **kwargs):
        self.phases["train_begin"] = time.time()
        # A resumed run repeats the steps after its checkpoint that the stopped run had already
        # logged: drop those records, so each step appears once in the file and the plots.
        if not state.is_world_process_zero or state.global_step == 0 or not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
        if len(kept) != len(lines):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            tmp.replace(self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time_s": round(time.time() - self.started, 3)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


class NonFiniteLossGuard(TrainerCallback):
    """Stops training at the first logged NaN/inf loss before anything is saved.

    It needs the Trainer's `logging_nan_inf_filter=False` (otherwise HF replaces a NaN
    loss by the running mean) and logging at every save step, which `train.args`
    enforces; `on_log` runs before the save of the same step, so cancelling the save
    here keeps the previous checkpoint as the latest good one.
    """

    def __init__(self):
        self.bad_step: int | None = None
        self.bad_value: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        self.bad_step, self.bad_value = state.global_step, float(loss)
        control.should_save = False
        control.should_training_stop = True

    def raise_if_tripped(self, last_good: str | None) -> None:
        if self.bad_step is None:
            return
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was saved before it"
        raise NonFiniteLossError(
            f"loss became {self.bad_value} at step {self.bad_step}; training stopped and {where}. "
            "Lower learning_rate, raise warmup, or check the data."
        )


def tensorboard_callback(log_dir: str | Path):
    """HF's TensorBoard callback writing into the run directory (not under the HF output_dir)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))
