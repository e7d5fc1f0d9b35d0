"""The training loop every method shares: SGD recipe, epochs, per-epoch evaluation of every head, checkpoints, resume.

The step itself (pcl.step) never synchronises with the host: the learning rate and loss weights are device tensors,
losses and correct counts accumulate on the device and are read once per epoch, and a non-finite loss is remembered
on the device (first bad step) and reported at the end of the epoch. That keeps the step capturable by a CUDA graph
(pcl.fastpath, fast_path="graph").

After every epoch the loop writes a checkpoint atomically (pcl.checkpoint: temp file + rename; only tensors and plain
containers, so it loads with `torch.load(weights_only=True)`). A run resumed from the checkpoint of epoch e continues
exactly as the uninterrupted run would: data order and augmentation are a pure function of (seed, epoch), and the
global RNG state (pcl.seeding) is saved with the weights.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch

from pcl import fastpath
from pcl.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, check_checkpoint, checkpoint_identity,
                            load_checkpoint, save_atomic)
from pcl.diversity import disagreement_count, diversity_percent
from pcl.interrupts import MetricsCallback, TrainingInterrupted
from pcl.methods.base import Method, check_views
from pcl.schema import CIFAR_RECIPE, KEYS, ConfigError, scaled_milestones
from pcl.seeding import rng_state, set_rng_state
from pcl.step import EpochAccumulator, autocast_for, train_step



#: seconds between two progress lines inside an epoch when no bar is shown
HEARTBEAT_S = 60.0


class Loader(Protocol):
    """What the engine needs of a data loader (pcl.data.DeviceLoader and the ImageNet loader provide it)."""

    num_images: int

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self): ...

    def __len__(self) -> int: ...


@dataclass
class Recipe:
    """Optimisation recipe (the engine's view of a run config's recipe keys); defaults are the CIFAR recipe
    (docs/config.md, "Per-dataset recipes") as pcl.schema defines it, and every value is checked by the schema's check
    of that key."""

    epochs: int = CIFAR_RECIPE.epochs
    lr: float = KEYS["lr"].default
    momentum: float = KEYS["momentum"].default
    nesterov: bool = KEYS["nesterov"].default
    weight_decay: float = CIFAR_RECIPE.weight_decay
    milestones: tuple[int, ...] = CIFAR_RECIPE.milestones
    gamma: float = KEYS["gamma"].default
    precision: str = KEYS["precision"].default

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, KEYS[f.name].check(getattr(self, f.name)))
        self.milestones = tuple(self.milestones)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("recipe nesterov=True needs momentum > 0")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Recipe":
        """The recipe of a normalized run config (pcl.schema.normalize_run_config)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})

    def lr_at(self, epoch: int) -> float:
        """Step schedule: lr * gamma^(number of milestones <= epoch)."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    @staticmethod
    def scaled_milestones(epochs: int) -> tuple[int, ...]:
        """The CIFAR milestones scaled to a shorter schedule (e.g. 150/225 of 300 -> 2/3 of 4); pcl.schema."""
        return tuple(scaled_milestones(epochs))


class NonFiniteLossError(RuntimeError):
    """The total loss became NaN or infinite; the run stops and its last good checkpoint stays on disk."""


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    summary: dict[str, float]
    checkpoint_path: str | None
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---- evaluation ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(method: Method, loader: Loader, precision: str = "fp32", progress: bool = False,
             heartbeat: Heartbeat | None = None) -> dict[str, float]:
    """Top-1 and top-5 error (%) of every head on the un-augmented test split; one host read at the end
    (`progress`: a bar over the batches).

    With two or more `method.peer_heads`, also `test/diversity`: their mean pairwise disagreement (%), see
    pcl.diversity.
    """
    method.eval()
    correct1: dict[str, torch.Tensor] = {}
    correct5: dict[str, torch.Tensor] = {}
    peers = tuple(method.peer_heads)
    disagree: torch.Tensor | None = None
    total = 0
    loader.set_epoch(0)
    if heartbeat is not None:
        heartbeat.start("evaluation", len(loader), _images_per_batch(loader))
    for step, (views, targets) in enumerate(_progress(loader, progress, "evaluation")):
        if heartbeat is not None:
            heartbeat.tick(step)
        with autocast_for(views[0].device, precision):
            heads = method.eval_heads(views[0])
        total += targets.shape[0]
        for name, logits in heads.items():
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top == targets[:, None]
            correct1[name] = correct1.get(name, 0) + hit[:, 0].sum()
            correct5[name] = correct5.get(name, 0) + hit.any(dim=1).sum()
        if len(peers) >= 2:
            count = disagreement_count([heads[p] for p in peers])
            disagree = count if disagree is None else disagree + count
    names = list(correct1)
    if not names:
        return {}
    extra = [] if disagree is None else [disagree]
    counts = torch.stack([correct1[n] for n in names] + [correct5[n] for n in names] + extra).double().cpu().tolist()
    out = {}
    for i, n in enumerate(names):
        out[f"test/top1_err/{n}"] = 100.0 * (1.0 - counts[i] / total)
        out[f"test/top5_err/{n}"] = 100.0 * (1.0 - counts[len(names) + i] / total)
    if disagree is not None:
        out["test/diversity"] = diversity_percent(counts[-1], total, len(peers))
    return out


# ---- training ------------------------------------------------------------------------------------------------
def make_optimizer(method: Method, recipe: Recipe) -> torch.optim.SGD:
    """SGD of the recipe over the method's parameter groups (`Method.param_groups`), the lr a device tensor.

    Fused SGD reads the tensor lr on the device; the foreach path calls .item() on it (a host sync per step).
    Every group shares the lr; a group may set its own weight decay (FFL's fusion module).
    """
    device = next(method.parameters()).device
    return torch.optim.SGD(method.param_groups(recipe.weight_decay), lr=torch.tensor(recipe.lr, device=device),
                           momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
                           fused=True)


def _in_memory_format_kernels(fn: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run `fn` (train) inside the convolution kernels its memory format needs (fastpath.memory_format_kernels)."""
    @functools.wraps(fn)
    def wrapper(method: Method, *args: Any, channels_last: bool = False, **kwargs: Any) -> TrainResult:
        with fastpath.memory_format_kernels(next(method.parameters()).device, channels_last):
            return fn(method, *args, channels_last=channels_last, **kwargs)
    return wrapper


@_in_memory_format_kernels
def train(method: Method, train_loader: Loader, test_loader: Loader | None, recipe: Recipe, *,
          checkpoint_path: str | os.PathLike | None = None, resume: bool = True,
          callbacks: Iterable[MetricsCallback] = (), progress: bool | None = False,
          should_stop: Callable[[], bool] | None = None, check_finite_every: int = 0,
          fast_path: str = "auto", channels_last: bool = False, write_checkpoints: bool = True,
          epoch_log: Callable[[str], None] | None = print, processes: int = 1, eval_every: int = 1,
          heartbeat_s: float = HEARTBEAT_S) -> TrainResult:
    """Train `method` (already on its device) with `recipe`; evaluate every head each epoch.

    callbacks receive (epoch, metrics) after every epoch: every loss term, every head's train/test top-1 and
    test top-5 error, the deployed head's test errors again under the method-independent names
    `test/top1_err/deployed` and `test/top5_err/deployed` (DEPLOYED_METRICS), the loss weights, lr, epoch time and
    images/s. `should_stop` is polled between steps (a
    plain Python flag, no device sync); when it returns True the run raises TrainingInterrupted and the last
    epoch's checkpoint stays on disk. `check_finite_every` > 0 also checks the loss every that many steps (one
    host sync each); by default non-finite losses are detected once per epoch.
    fast_path: "graph" (the whole step over static buffers, captured in one CUDA graph on CUDA, run uncaptured on
    the CPU: pcl.fastpath), "eager", or "auto" (default: graph on one CUDA device with a device-resident train
    loader, else eager; pcl.schema.resolve_fast_path). Both compute the same function. channels_last: weights and
    (fast path) views in channels_last memory format. write_checkpoints=False resumes from checkpoint_path but
    never writes it (the non-zero ranks of a distributed run, pcl.distributed). processes: the data-parallel
    processes training these steps together, each on its slice of the batch: `images_per_s` counts all of them (the
    train errors and losses stay this process's slice).
    `epoch_log` receives one plain line per epoch (`epoch_line`; None: silent); `progress` adds bars over training
    and evaluation (None: bars when stderr is a terminal). Without bars, `epoch_log` also gets a line every
    `heartbeat_s` seconds inside an epoch (steps done, images/s, the epoch's time left), so a slow epoch is never
    silent. `eval_every`: evaluate every that many epochs and always the last one; evaluation changes no trained
    number (eval mode, no gradient, its own data order), so the cadence is bookkeeping.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    beat = None if progress or epoch_log is None else Heartbeat(epoch_log, heartbeat_s)
    if fast_path not in fastpath.FAST_PATHS:
        raise ValueError(f"fast_path={fast_path!r} is invalid; allowed: {', '.join(fastpath.FAST_PATHS)}")
    device = next(method.parameters()).device
    fast_path = fastpath.resolve_fast_path(fast_path, cuda=device.type == "cuda", processes=processes,
                                           device_resident=fastpath.has_draws(train_loader))
    fastpath.set_precision(recipe.precision)
    if channels_last:
        fastpath.to_channels_last(method)
    optimizer = make_optimizer(method, recipe)
    history: list[dict[str, float]] = []
    start_epoch = 0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and resume and path.exists():
        state = load_checkpoint(path, map_location=device)
        check_checkpoint(state, path, checkpoint_identity(method), recipe.epochs)
        try:  # state dicts of other shapes or keys (a tampered or foreign file): named, not a traceback
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
            raise CheckpointError(path, f"its state does not load into this method and optimizer "
                                        f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        history = list(state["history"])
        start_epoch = state["epoch"]
    resumed_from = start_epoch
    fast = None
    if fast_path == "graph":
        fast = fastpath.StaticStep(method, optimizer, train_loader, precision=recipe.precision,
                                   channels_last=channels_last)
        test_loader = None if test_loader is None else fastpath.LargeBatchEval(test_loader,
                                                                                channels_last=channels_last)
    session_start = time.perf_counter()

    for epoch in range(start_epoch, recipe.epochs):
        for group in optimizer.param_groups:  # one shared lr tensor today; every group, should that change
            group["lr"].fill_(recipe.lr_at(epoch))
        method.on_epoch_start(epoch)
        method.train()
        train_loader.set_epoch(epoch)
        acc = EpochAccumulator(device) if fast is None else fast.begin_epoch(train_loader)
        weights = method.loss_weights()
        t0 = time.perf_counter()
        batches = _progress(train_loader if fast is None else fast.batches(train_loader), progress,
                            f"epoch {epoch + 1}/{recipe.epochs}", len(train_loader))
        if beat is not None:
            beat.start(f"epoch {epoch + 1}/{recipe.epochs}", len(train_loader), _images_per_batch(train_loader))
        for step, batch in enumerate(batches):
            if should_stop is not None and should_stop():
                raise TrainingInterrupted(epoch, str(path) if path and path.exists() else None)
            if beat is not None:
                beat.tick(step)
            if fast is not None:
                total = fast.step(batch)
            else:
                views, targets = batch
                check_views(method, views)
                total, losses, logits = train_step(method, optimizer, views, targets, recipe.precision)
                acc.add(total, losses, logits, targets)
            if check_finite_every and (step + 1) % check_finite_every == 0 and not torch.isfinite(total):
                _raise_nonfinite(epoch, step, path)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        metrics, first_bad = acc.read()
        if first_bad >= 0:
            _raise_nonfinite(epoch, first_bad, path)
        metrics.update({f"train/weight/{k}": float(v) for k, v in weights.items()})
        metrics.update({k: float(v) for k, v in method.scalars().items()})
        metrics["lr"] = recipe.lr_at(epoch)
        metrics["epoch_time_s"] = train_time
        metrics["images_per_s"] = acc.images * processes / max(train_time, 1e-9)
        if test_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs):
            metrics.update(evaluate(method, test_loader, recipe.precision, progress=progress, heartbeat=beat))
            metrics.update(deployed_metrics(metrics, method.deployed_head))
        metrics["epoch"] = epoch + 1
        history.append(metrics)
        if epoch_log is not None:
            per_epoch = (time.perf_counter() - session_start) / (epoch + 1 - start_epoch)
            epoch_log(epoch_line(history, recipe.epochs, method.deployed_head, time.perf_counter() - t0,
                                 per_epoch * (recipe.epochs - epoch - 1),
                                 trained_head=method.trained_head_of(method.deployed_head)))
        if path is not None and write_checkpoints:
            save_atomic({"format": CHECKPOINT_FORMAT, "identity": checkpoint_identity(method),
                         "epoch": epoch + 1, "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": rng_state(), "history": history, "recipe": asdict(recipe)}, path)
        for callback in callbacks:
            callback(epoch, metrics)
    return TrainResult(history=history, summary=summarize(history, method.deployed_head),
                       checkpoint_path=str(path) if path else None, resumed_from_epoch=resumed_from)


def epoch_line(history: list[dict[str, float]], epochs: int, deployed_head: str, seconds: float,
               eta_s: float, trained_head: str | None = None) -> str:
    """One plain line (no control characters) for the last epoch of `history`: epoch, lr, ramp-up weight, total
    loss, train and test top-1 error (%) of the deployed head, the best test error so far, the epoch's wall time
    (training + evaluation) and the estimated time left (mean epoch time of this session x epochs left).

    A deployed temporal mean is not trained itself: its train error is that of `trained_head`, the live head it
    averages (declared: `Head(..., mean_of=...)`, `Method.trained_head_of`).
    """
    m = history[-1]
    parts = [f"epoch {int(m['epoch'])}/{epochs}", f"lr {m['lr']:.4g}"]
    if "rampup_weight" in m:
        parts.append(f"ramp-up {m['rampup_weight']:.3f}")
    parts.append(f"loss {m['train/loss/total']:.4f}")
    trained = trained_head or deployed_head
    if f"train/top1_err/{trained}" in m:
        parts.append(f"train err {m[f'train/top1_err/{trained}']:.2f}%"
                     + (f" ({trained})" if trained != deployed_head else ""))
    test_key = f"test/top1_err/{deployed_head}"
    if test_key in m:
        parts.append(f"test err {m[test_key]:.2f}% ({deployed_head})")
        best = min((h for h in history if test_key in h), key=lambda h: h[test_key])
        parts.append(f"best {best[test_key]:.2f}% (epoch {int(best['epoch'])})")
    parts.append(f"{seconds:.1f}s")
    parts.append(f"ETA {_clock(eta_s)}")
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _raise_nonfinite(epoch: int, step: int, path: Path | None) -> None:
    raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} (1-based); "
                             f"last good checkpoint: {path if path and path.exists() else 'none'}")


class Heartbeat:
    """A plain progress line every `interval_s` seconds inside a long loop (training steps or evaluation), for logs
    and terminals without a bar: "epoch 3/10  step 120/390 (31%)  412 images/s  1:05 left in this phase".

    Reads only the host clock between steps (no device synchronisation: on a GPU the rate counts launched steps,
    which run at most a few steps ahead of the device)."""

    def __init__(self, log: Callable[[str], None], interval_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.interval_s, self.clock = log, interval_s, clock
        self.what, self.total, self.batch, self.t0, self.next_at = "", 0, 0.0, 0.0, 0.0

    def start(self, what: str, total: int, images_per_batch: float) -> None:
        self.what, self.total, self.batch = what, total, images_per_batch
        self.t0 = self.clock()
        self.next_at = self.t0 + self.interval_s

    def tick(self, step: int) -> None:
        """Called before step `step` (0-based); logs a line when the interval has passed."""
        now = self.clock()
        if now < self.next_at or step == 0:
            return
        self.next_at = now + self.interval_s
        elapsed = now - self.t0
        rate = step / elapsed if elapsed > 0 else 0.0
        left = (self.total - step) / rate if rate > 0 else 0.0
        share = f" ({100 * step / self.total:.0f}%)" if self.total else ""
        images = f"  {rate * self.batch:,.0f} images/s" if self.batch else ""
        self.log(f"{self.what}  step {step}/{self.total}{share}{images}  {_clock(left)} left in this phase")


def _images_per_batch(loader: Loader) -> float:
    return getattr(loader, "num_images", 0) / max(len(loader), 1)


def _progress(loader: Iterable, enabled: bool, desc: str, total: int | None = None):
    """`loader` itself, or a tqdm bar over it (`total` batches; default len(loader))."""
    if not enabled:
        return loader
    from tqdm.auto import tqdm  # imported here so the core stays importable without it

    return tqdm(loader, total=len(loader) if total is None else total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


#: the method-independent headline: the deployed head's test errors under one name for every method
DEPLOYED_METRICS = ("test/top1_err/deployed", "test/top5_err/deployed")


def deployed_metrics(metrics: Mapping[str, float], deployed_head: str) -> dict[str, float]:
    """`test/top1_err/deployed` and `test/top5_err/deployed` (%): copies of the deployed head's test errors
    (`test/top1_err/<deployed_head>`), so that one metric name gives every method's headline curve."""
    out = {}
    for name in DEPLOYED_METRICS:
        head_key = f"{name.rsplit('/', 1)[0]}/{deployed_head}"
        if head_key in metrics:
            out[name] = float(metrics[head_key])
    return out


def summarize(history: list[dict[str, float]], deployed_head: str) -> dict[str, float]:
    """The final result as a flat dict of floats: every head's last-epoch error and its best epoch's.

    `deployed/top1_err` is the reported number (last epoch). Best-epoch values are selected ON THE TEST SET and
    therefore optimistic; their keys say so (`best_on_test/...`).
    """
    if not history:
        return {}
    last = history[-1]
    out: dict[str, float] = {}
    for kind in ("top1_err", "top5_err"):  # first: clients that show the result cut it at its start
        key = f"test/{kind}/{deployed_head}"
        if key in last:
            out[f"deployed/{kind}"] = last[key]
    out["epochs"] = float(last["epoch"])
    for key, value in last.items():
        if key.startswith("test/") and key not in DEPLOYED_METRICS:
            out[f"last/{key[len('test/'):]}"] = value
            if "_err/" not in key:  # e.g. test/diversity: no "best" value
                continue
            values = [h[key] for h in history if key in h]
            best = min(values)
            out[f"best_on_test/{key[len('test/'):]}"] = best
            if key.startswith("test/top1_err/"):
                out[f"best_on_test_epoch/{key[len('test/top1_err/'):]}"] = float(values.index(best) + 1)
    return out
