"""What a single run (`benchmarks.train`) shows while it trains: a tqdm bar over the epoch's steps (on a
terminal) and one line per epoch: epoch, loss, lr, the accuracies evaluated, images/s and ETA."""
from __future__ import annotations

import math
import sys
import time

from molere.trainer import Callback


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def epoch_line(epoch: int, epochs: int, metrics: dict, images: int, seconds: float, eta_s: float | None) -> str:
    """'epoch 3/20  loss 0.4123  lr 0.0951  val acc 91.20  test acc 90.80  1,234 img/s  ETA 0:12'."""
    parts = [f"epoch {epoch}/{epochs}", f"loss {metrics.get('train/loss', float('nan')):.4f}",
             f"lr {metrics.get('lr', float('nan')):.4g}"]
    parts += [f"{k[:-4]} acc {100 * v:.2f}" for k, v in metrics.items()
              if k.endswith("/acc") and not k.startswith("train/") and isinstance(v, (int, float))]
    if seconds > 0 and images:
        parts.append(f"{images / seconds:,.0f} img/s")
    parts.append(f"ETA {_clock(eta_s)}" if eta_s is not None else "done")
    return "  ".join(parts)


class ConsoleProgress(Callback):
    """Trainer callback: a step bar per epoch (terminal only) and `epoch_line` after every epoch."""

    def __init__(self, epochs: int, stream=None):
        self.epochs, self.stream = epochs, stream or sys.stdout
        self.bar = None
        self.t_start = self.t_epoch = None
        self.done_epochs = 0           # epochs trained in this process (a resumed run skips the earlier ones)

    def _bar(self, trainer):
        from tqdm import tqdm
        total = math.ceil(len(trainer.train_set) / trainer.cfg.batch_size)
        return tqdm(total=total, desc=f"epoch {trainer.epoch + 1}/{self.epochs}", unit="step", leave=False,
                    file=self.stream, disable=None, dynamic_ncols=True)

    def on_step_end(self, trainer, step: int, metrics: dict) -> None:
        now = time.perf_counter()
        if self.t_start is None:
            self.t_start = now
        if self.t_epoch is None:
            self.t_epoch = now
        if self.bar is None:
            self.bar = self._bar(trainer)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{metrics.get('train/step_loss', float('nan')):.4f}", refresh=False)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        from tqdm import tqdm
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.done_epochs += 1
        seconds = float(metrics.get("train/epoch_time_s") or (now - (self.t_epoch or now)))
        per_epoch = (now - self.t_start) / self.done_epochs if self.t_start is not None else seconds
        eta = per_epoch * (self.epochs - epoch) if epoch < self.epochs else None
        tqdm.write(epoch_line(epoch, self.epochs, metrics, len(trainer.train_set), seconds, eta), file=self.stream)
        self.stream.flush()
        self.t_epoch = None
