"""The fast path: the whole training step as one function over static buffers, captured in a CUDA graph on CUDA.

Why: at batch 128 the CIFAR networks are launch-bound (bench/RESULTS.md); replaying one captured graph per step
removes the per-kernel launch cost of the eager step without changing what is computed.

What is captured (`StaticStep.step_fn`, a plain function that also runs, uncaptured, on the CPU):
  1. on-device views: the batch's indices and crop/flip draws are sliced on the device from the epoch's draws
     (copied once per epoch into static buffers) by a device batch counter, then gathered, cropped, flipped and
     normalised (exactly `DeviceLoader.views_from`); for any other loader the views are copied into static
     buffers before each replay;
  2. `pcl.step.train_step`: forward of the peers and mean teachers, losses, backward, fused SGD (learning rate
     a device tensor), the temporal-mean update (step counter on the device);
  3. metric accumulation: loss sums, correct counts and the first non-finite step in static device tensors.
Everything a step reads that changes during training (lr, ramp-up weight w(e), the EMA decay cap and step
counter, the epoch's draws) is a device tensor updated in place outside the graph, so one capture serves the
whole run.

Capture (CUDA only): a few warm-up steps on a side stream (cuDNN autotuning, lazily created optimiser state and
accumulators), then `torch.cuda.graph`; afterwards every tensor the warm-up changed (weights, BN statistics, the
temporal mean and its step counter, momentum buffers, RNG state) is restored in place, so the captured run starts
from exactly the state the eager run would. On the CPU the same function runs uncaptured (`capture=False`): that
is how tests/test_fastpath.py checks, for every method, that it equals the eager step.

Precision: fp32 (true fp32: TF32 off for matmuls and cuDNN), tf32 (TF32 on), bf16 (autocast, TF32 off).
channels_last converts the weights and the views. Both change numbers, so both belong in a run's key; the fast path
itself does not (config key fast_path is infrastructure).

Checked on a GPU (NVIDIA H200, torch 2.11, 2026-12-04; bench/RESULTS.md): every method captured, and in fp32 each
captured copy stayed within its eager copies' own run-to-run drift over 120 steps (a weak bound: without
deterministic kernels that drift reached O(1) in some tensors); in bf16 + channels_last the captured baseline and
PCL were bit-identical to eager over 60 steps across an epoch boundary (lr and ramp-up weight changed), the strong
evidence that nothing is baked into the graph. The other methods' bit-level agreement waits for the deterministic
fp32 check of bench/device_check.sh. fast_path=auto (the default) uses the graph on one CUDA device with
device-resident data: PCL ResNet-32 trains 2.6x faster than eager there.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from pcl.schema import FAST_PATHS, PRECISIONS, resolve_fast_path  # noqa: F401 - re-exported for the engine
from pcl.methods.base import Method, check_views
from pcl.step import train_step


# ---- precision and memory format ------------------------------------------------------------------------------
def set_precision(precision: str) -> None:
    """Set the global TF32 switches for `precision` (fp32 | tf32 | bf16); bf16 itself is an autocast context.

    PyTorch's default leaves cuDNN TF32 on, so a plain "fp32" run on an Ampere+ GPU would silently convolve in
    TF32; here fp32 means IEEE fp32 everywhere. Affects CUDA only (TF32 does not exist on the CPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid; allowed: {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


@contextlib.contextmanager
def memory_format_kernels(device: torch.device | str, channels_last: bool) -> Iterator[None]:
    """The convolution kernels a run's steps use: on the CPU with channels_last, PyTorch's own kernels, not
    oneDNN's; anything else unchanged.

    Why: oneDNN's AVX2 1x1-convolution backward (`jit_avx2_1x1_convolution_bwd_weights`, torch 2.14.1) crashes
    the process or never returns on a channels_last PCL step of CPUs without AVX-512 (seen on an AMD EPYC with
    AVX2 only); PyTorch's kernels compute the same convolutions. channels_last is a GPU memory format, so a CPU
    run loses no speed that matters; the switch is restored on exit (it is global to the process).
    """
    if not channels_last or torch.device(device).type != "cpu":
        yield
        return
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def to_channels_last(method: Method) -> Method:
    """Convert every 4-d weight (and the temporal mean's copies) to channels_last in place; returns `method`.
    On the CPU, train and step inside `memory_format_kernels` (oneDNN's channels_last backward can crash there)."""
    return method.to(memory_format=torch.channels_last)


# ---- metric accumulation in static buffers ----------------------------------------------------------------------
class StaticAccumulator:
    """The engine's per-epoch metric sums, kept in fixed device tensors that a captured step updates in place.

    `read()` returns what `pcl.step.EpochAccumulator.read` returns: mean loss terms per step, train top-1
    error (%) per head, and the first non-finite step (-1 if none).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.keys: list[str] | None = None
        self.sums: Tensor | None = None
        self.step_index = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.steps = 0
        self.images = 0

    def reset(self) -> None:
        """Zero the sums (outside the graph, before an epoch)."""
        if self.sums is not None:
            self.sums.zero_()
        self.step_index.zero_()
        self.first_bad_step.fill_(-1)
        self.steps = 0
        self.images = 0

    def add(self, total: Tensor, losses: dict[str, Tensor], logits: dict[str, Tensor], targets: Tensor) -> None:
        """Device-only, in-place update (captured). The key set is fixed by the first call."""
        total = total.detach().float()
        keys = ["train/loss/total"] + [f"train/loss/{n}" for n in losses] + [f"train/correct/{n}" for n in logits]
        values = [total] + [v.detach().float() for v in losses.values()]
        values += [(z.detach().argmax(dim=1) == targets).sum().float() for z in logits.values()]
        if self.keys is None:
            self.keys = keys
            self.sums = torch.zeros(len(keys), dtype=torch.float32, device=self.device)
        elif keys != self.keys:
            raise RuntimeError(f"the step's loss terms / heads changed: {keys} vs {self.keys}")
        self.sums.add_(torch.stack(values))
        bad = ~torch.isfinite(total) & (self.first_bad_step < 0)
        self.first_bad_step.copy_(torch.where(bad, self.step_index, self.first_bad_step))
        self.step_index.add_(1)

    def read(self) -> tuple[dict[str, float], int]:
        """One host read: (metrics, first non-finite step or -1)."""
        if self.sums is None:
            return {}, int(self.first_bad_step)
        values = torch.cat([self.sums.double(), self.first_bad_step.double()[None]]).cpu().tolist()
        out: dict[str, float] = {}
        for k, v in zip(self.keys, values[:-1]):
            if k.startswith("train/correct/"):
                out["train/top1_err/" + k[len("train/correct/"):]] = 100.0 * (1.0 - v / max(self.images, 1))
            else:
                out[k] = v / max(self.steps, 1)
        return out, int(values[-1])


# ---- the static step --------------------------------------------------------------------------------------------
class StaticStep:
    """The training step over static buffers; `capture=True` (CUDA) replays it as one CUDA graph.

    Usage per epoch (what `pcl.engine.train(fast_path="graph")` does):
        acc = fast.begin_epoch(train_loader)      # loads the epoch's draws, resets the sums
        for batch in fast.batches(train_loader):  # one item per step (nothing to read for a DeviceLoader)
            fast.step(batch)
        metrics, first_bad = acc.read()

    train_loader: a `pcl.data.DeviceLoader` (train, drop_last) uses the on-device-draws mode; any other loader
    with a fixed batch shape the copy-in mode. capture: None = on CUDA only. warmup: steps run (and undone)
    before capture; 0 on the CPU unless asked (tests set it to check that the warm-up leaves no trace).
    """

    def __init__(self, method: Method, optimizer: torch.optim.Optimizer, train_loader: Any, *,
                 precision: str = "fp32", channels_last: bool = False, capture: bool | None = None,
                 warmup: int | None = None):
        self.method = method
        self.optimizer = optimizer
        self.device = next(method.parameters()).device
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.capture = (self.device.type == "cuda") if capture is None else bool(capture)
        if self.capture and self.device.type != "cuda":
            raise ValueError(f"CUDA-graph capture needs a CUDA device, the method is on {self.device}")
        self.warmup = (3 if self.capture else 0) if warmup is None else int(warmup)
        if self.capture and self.warmup < 1:
            raise ValueError("CUDA-graph capture needs at least one warm-up step (warmup >= 1)")
        self.acc = StaticAccumulator(self.device)
        self.graph: Any = None
        self.draws_mode = _serves_draws(train_loader)  # drop_last=False: refused below, naming it
        if self.draws_mode:
            self._init_draws(train_loader)
        else:
            self.loader = train_loader
            self.static_views: Tensor | None = None
            self.static_targets: Tensor | None = None
        self.last_total: Tensor | None = None

    # -- inputs -------------------------------------------------------------------------------------------
    def _init_draws(self, loader: Any) -> None:
        if not loader.drop_last:
            raise ValueError("the fast path needs a train loader with drop_last=True (one fixed batch shape)")
        check_views(self.method, [None] * loader.num_views)
        self.loader = loader
        self.batch_size = loader.batch_size
        self.num_batches = len(loader)
        used = self.num_batches * self.batch_size
        d = self.device
        self.perm = torch.zeros(loader.dataset_size, dtype=torch.long, device=d)
        self.dy = torch.zeros(loader.num_views, used, dtype=torch.long, device=d)
        self.dx = torch.zeros_like(self.dy)
        self.flip = torch.zeros(loader.num_views, used, dtype=torch.bool, device=d)
        self.batch_index = torch.zeros((), dtype=torch.long, device=d)  # which batch of the epoch comes next
        self.offsets = torch.arange(self.batch_size, device=d)

    def _inputs(self) -> tuple[list[Tensor], Tensor]:
        if self.draws_mode:
            pos = self.batch_index * self.batch_size + self.offsets  # device arithmetic: no host sync
            idx = self.perm.index_select(0, pos)
            views, targets = self.loader.views_from(idx, self.dy.index_select(1, pos),
                                                    self.dx.index_select(1, pos), self.flip.index_select(1, pos))
            self.batch_index.add_(1)
        else:
            views, targets = list(self.static_views.unbind(0)), self.static_targets
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, targets

    # -- the function that is captured --------------------------------------------------------------------
    def step_fn(self) -> Tensor:
        """One whole training step reading only static buffers; returns the total loss (a device tensor)."""
        views, targets = self._inputs()
        # Autocast's weight-cast cache stays as in the eager step: turning it off would change bf16 numbers
        # (a weight used on several views would get its gradient summed in fp32 instead of bf16). The cache lives
        # and dies inside the captured region. If bf16 capture misbehaves on a GPU, that is the first suspect.
        total, losses, logits = train_step(self.method, self.optimizer, views, targets, self.precision)
        self.acc.add(total, losses, logits, targets)
        return total

    # -- per epoch and per step ---------------------------------------------------------------------------
    def begin_epoch(self, loader: Any) -> StaticAccumulator:
        """Load the next epoch's draws (advancing the loader's epoch like iterating it would); reset the sums."""
        if self.draws_mode:
            epoch = loader.epoch
            loader.epoch += 1
            perm, dy, dx, flip = loader.epoch_draws(epoch)
            self.perm.copy_(perm)
            self.dy.copy_(dy)
            self.dx.copy_(dx)
            self.flip.copy_(flip)
            self.batch_index.zero_()
        self.acc.reset()
        return self.acc

    def batches(self, loader: Any) -> Iterator[Any]:
        """One item per training step: the step number (draws mode) or the loader's (views, targets)."""
        if self.draws_mode:
            yield from range(self.num_batches)
        else:
            yield from loader

    def __len__(self) -> int:
        return len(self.loader)

    def step(self, batch: Any) -> Tensor:
        """Run one training step (replaying the graph once captured). Returns the total loss tensor."""
        if not self.draws_mode:
            self._copy_in(*batch)
        if self.capture and self.graph is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            total = self.last_total
        else:
            total = self.step_fn()
        self.acc.steps += 1
        self.acc.images += self.batch_size
        return total

    def _copy_in(self, views: list[Tensor], targets: Tensor) -> None:
        check_views(self.method, views)
        stacked_shape = (len(views), *views[0].shape)
        if self.static_views is None:
            self.static_views = torch.empty(stacked_shape, dtype=views[0].dtype, device=self.device)
            self.static_targets = torch.empty_like(targets, device=self.device)
            self.batch_size = int(targets.shape[0])
        if stacked_shape != tuple(self.static_views.shape) or targets.shape != self.static_targets.shape:
            raise ValueError(f"the fast path needs one fixed batch shape; got views {stacked_shape} after "
                             f"{tuple(self.static_views.shape)} (use drop_last=True)")
        for buf, v in zip(self.static_views.unbind(0), views):
            buf.copy_(v, non_blocking=True)
        self.static_targets.copy_(targets, non_blocking=True)

    # -- capture (CUDA) -----------------------------------------------------------------------------------
    def _stateful_tensors(self) -> list[Tensor]:
        """Every tensor a training step may change: module parameters and buffers, optimiser state, counters."""
        tensors = list(self.method.state_dict(keep_vars=True).values())
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
        if self.draws_mode:
            tensors.append(self.batch_index)
        return [t.data if isinstance(t, torch.nn.Parameter) else t for t in tensors]

    def run_warmup(self) -> None:
        """`warmup` steps whose effects are undone in place afterwards (state, optimiser, RNG, accumulators).

        Called by the capture on a side stream; callable on its own (the CPU test checks it leaves no trace).
        """
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        had_momentum = {id(p) for p in params if self.optimizer.state.get(p, {}).get("momentum_buffer") is not None}
        saved = [(t, t.detach().clone()) for t in self._stateful_tensors()]
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        for _ in range(self.warmup):
            if self.draws_mode:
                self.batch_index.zero_()
            self.step_fn()
        for t, v in saved:
            t.copy_(v)
        # Momentum buffers the warm-up created: zero. SGD's next update buf = momentum*0 + grad equals the first
        # step's buf = grad, so the captured step (which always takes the buffer path) matches the eager one.
        for p in params:
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None and id(p) not in had_momentum:
                buf.zero_()
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
        self.acc.reset()

    def _capture(self) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self.run_warmup()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        # Grads set to None before capture: backward allocates them from the graph's pool and overwrites them on
        # every replay (the eager step's zero_grad(set_to_none=True) + backward).
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        saved = [(t, t.detach().clone()) for t in self._stateful_tensors()]
        # thread_local: a DataLoader's pin-memory thread may allocate pinned memory while we capture (copy-in
        # mode); "global" would turn that into a capture error.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.last_total = self.step_fn()
        # Capture records kernels without running them; restoring guards against anything run eagerly in it.
        for t, v in saved:
            t.copy_(v)
        self.acc.reset()
        self.graph = graph


def _serves_draws(loader: Any) -> bool:
    """A train DeviceLoader: the static step slices its epoch's draws on the device (draws mode)."""
    return all(hasattr(loader, a) for a in ("epoch_draws", "views_from", "drop_last")) and getattr(loader, "train",
                                                                                                   False)


def has_draws(loader: Any) -> bool:
    """Whether fast_path=auto may capture a step over `loader`: device-resident draws in batches of one shape."""
    return _serves_draws(loader) and bool(loader.drop_last)


# ---- evaluation in large batches --------------------------------------------------------------------------------
class LargeBatchEval:
    """A test loader re-batched `batch_size` at a time (device-resident splits), channels_last if asked.

    Evaluation is per sample (BN in eval mode), so the batch size changes the errors only through kernel
    rounding; fewer, larger batches keep the GPU busy where batch 128 is launch-bound.
    """

    def __init__(self, loader: Any, batch_size: int = 1024, channels_last: bool = False):
        self.loader = loader
        self.batch_size = int(batch_size)
        self.channels_last = channels_last

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(self.loader.dataset_size / self.batch_size) if self._device_split else len(self.loader)

    @property
    def _device_split(self) -> bool:
        return hasattr(self.loader, "images") and hasattr(self.loader, "_normalize") and not self.loader.train

    @property
    def num_images(self) -> int:
        return self.loader.num_images

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        if not self._device_split:
            for views, targets in self.loader:
                yield [self._fmt(v) for v in views], targets
            return
        images, labels, b = self.loader.images, self.loader.labels, self.batch_size
        for i in range(0, images.shape[0], b):
            yield [self._fmt(self.loader._normalize(images[i:i + b]))], labels[i:i + b]

    def _fmt(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@contextlib.contextmanager
def precision_scope(precision: str):
    """Set the TF32 switches for `precision` and put the previous ones back afterwards."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_precision(precision)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
