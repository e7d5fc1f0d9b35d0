"""Device-resident loaders (airbench style) and the one entry point ``build_loaders``.

Why: a whole CIFAR split is 150 MB of uint8, so it lives on the training device; every batch is an index_select
plus one gather for all views, with no worker processes and no host synchronisation. All randomness of an epoch
comes from a device generator seeded with ``seed * 100_003 + epoch``, so a run resumed at epoch ``e`` sees
exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from pcl.schema import DATASETS, NUM_CLASSES  # noqa: F401 - config facts (torch-free), re-exported by pcl.data

from .augment import MEANS_STDS, apply_affine, crop_flip, normalization_affine, sample_crop_flip
from .cifar import ArraySplit, load_cifar
from .draws import epoch_seed, subset_indices
from .synthetic import make_synthetic

class DeviceLoader:
    """Iterates a whole ArraySplit held on the device; yields ``(views: list[float Tensor], labels)``.

    ``train=True``: every epoch a fresh permutation and ``num_views`` independent crop+flip views per batch (one view
    per peer: Wu & Gong 2021's multi-input augmentation). ``train=False``: in order, un-augmented, a single view
    ``[x]``. ``set_epoch(e)`` fixes the epoch whose draws every following iteration uses. Iterating has no side effects:
    a progress bar, a probe or a second pass over the same epoch sees the same batches, so nothing outside the run's
    identity (seed, epoch) can change what is trained.
    """

    def __init__(
        self,
        split: ArraySplit,
        *,
        batch_size: int,
        num_views: int,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        seed: int,
        drop_last: bool | None = None,
        padding: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device).contiguous()
        self.labels = split.labels.to(self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.num_views = int(num_views)
        self.train = bool(train)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.padding = int(padding)
        self.dtype = dtype
        self.seed = int(seed)
        self.epoch = 0
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._scale, self._shift = normalization_affine(self.mean, self.std, self.device)
        n = len(self.images)
        if self.drop_last and n < self.batch_size:
            raise ValueError(
                f"split has {n} images, fewer than batch_size={self.batch_size} with drop_last: no batch would "
                f"be yielded (use a smaller batch or a larger subset)"
            )

    @property
    def dataset_size(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        n, b = self.dataset_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_images(self) -> int:
        """Images yielded per epoch (per view)."""
        return len(self) * self.batch_size if self.drop_last else self.dataset_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch))

    def _normalize(self, x: Tensor) -> Tensor:
        return apply_affine(x, self._scale, self._shift, self.dtype)

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        return self._iter_train(self.epoch) if self.train else self._iter_eval()

    def _iter_eval(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        b = self.batch_size
        for i in range(len(self)):
            x = self.images[i * b : (i + 1) * b]
            yield [self._normalize(x)], self.labels[i * b : (i + 1) * b]

    def epoch_draws(self, epoch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All random draws of one training epoch: ``(perm [N], dy [k, nb*B], dx [k, nb*B], flip [k, nb*B])``.

        Batch ``i`` is ``views_from(perm[i*B:(i+1)*B], dy[:, i*B:(i+1)*B], ...)``; the CUDA-graph fast path
        (pcl.fastpath) copies these into static buffers once per epoch and slices them on the device.
        """
        g = self._generator(epoch)
        perm = torch.randperm(self.dataset_size, generator=g, device=self.device)
        # All augmentation draws of the epoch in three kernels; batch i uses column block i.
        dy, dx, flip = sample_crop_flip((self.num_views, len(self) * self.batch_size), g, self.device, self.padding)
        return perm, dy, dx, flip

    def views_from(self, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> tuple[list[Tensor], Tensor]:
        """The normalised crop+flip views ``[k x [B, C, H, W]]`` and labels ``[B]`` of the images ``idx``."""
        x = self.images.index_select(0, idx)
        views = crop_flip(x, dy, dx, flip, self.padding)
        return list(self._normalize(views).unbind(0)), self.labels.index_select(0, idx)

    def _iter_train(self, epoch: int) -> Iterator[tuple[list[Tensor], Tensor]]:
        b, nb = self.batch_size, len(self)
        perm, dy, dx, flip = self.epoch_draws(epoch)
        for i in range(nb):
            sl = slice(i * b, (i + 1) * b)
            idx = perm[sl]
            m = idx.shape[0]  # the last batch may be short when drop_last=False (a host-side int: no sync)
            yield self.views_from(idx, dy[:, sl][:, :m], dx[:, sl][:, :m], flip[:, sl][:, :m])


class ShardedDeviceLoader:
    """One process's slice of every global batch of a train DeviceLoader (data-parallel training, config key gpus).

    Built on the loader of the GLOBAL batch: every process holds the split and draws the same epoch permutation
    and crop/flip draws (a function of seed and epoch only); process ``rank`` takes rows ``rank*b..(rank+1)*b`` of
    each global batch, ``b = batch_size // world_size``. So ``world_size`` processes see exactly the images and
    views that one process with the global batch would. Raises ValueError for an eval loader, drop_last=False or a
    global batch that ``world_size`` does not divide.
    """

    def __init__(self, loader: DeviceLoader, rank: int, world_size: int) -> None:
        if not (loader.train and loader.drop_last):
            raise ValueError("only a train DeviceLoader with drop_last=True is sharded; evaluate on rank 0")
        if loader.batch_size % world_size:
            raise ValueError(f"batch_size={loader.batch_size} (global) must be divisible by the world size "
                             f"{world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..{world_size - 1}")
        self.loader, self.rank, self.world_size = loader, int(rank), int(world_size)
        self.batch_size = loader.batch_size // world_size
        self.num_views = loader.num_views
        self.drop_last, self.train = True, True

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset_size(self) -> int:
        return self.loader.dataset_size

    @property
    def num_images(self) -> int:
        """Images this process trains on per epoch (per view)."""
        return len(self) * self.batch_size

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        perm, dy, dx, flip = self.loader.epoch_draws(self.loader.epoch)
        big, b, r = self.loader.batch_size, self.batch_size, self.rank
        for i in range(len(self)):
            sl = slice(i * big + r * b, i * big + (r + 1) * b)
            yield self.loader.views_from(perm[sl], dy[:, sl], dx[:, sl], flip[:, sl])


def _check_subset(train_subset: object, n: int) -> int:
    if isinstance(train_subset, bool) or not isinstance(train_subset, int):
        raise ValueError(f"train_subset must be a positive int or None, got {train_subset!r}")
    if not 1 <= train_subset <= n:
        raise ValueError(f"train_subset must be in 1..{n} (the train split size), got {train_subset}")
    return train_subset


def build_loaders(
    dataset: str,
    *,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    batch_size: int,
    num_views: int,
    device: torch.device | str,
    seed: int,
    train_subset: int | None = None,
    synthetic_classes: int = 10,
    synthetic_train_size: int = 2048,
    synthetic_test_size: int = 512,
    synthetic_seed: int = 0,
    test_batch_size: int | None = None,
    workers: int = 8,
    dtype: torch.dtype = torch.float32,
    imagenet_crop_size: int = 224,
    imagenet_resize_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
):
    """``(train_loader, test_loader, num_classes)`` for one of ``DATASETS``.

    ``batch_size`` is the global batch; with ``world_size > 1`` (data-parallel processes) the train loader yields
    process ``rank``'s share of each global batch (``batch_size // world_size`` images; ShardedDeviceLoader, or the
    ImageNet sampler's slice), and every process draws the same global order, so the union of the processes'
    batches is what one process with the global batch trains on.

    CIFAR and synthetic data are served by DeviceLoader; ImageNet by a worker-based loader with the same
    contract. ``train_subset`` keeps a random subset (seeded by ``seed``) of the train split for quick runs.
    The synthetic data itself is fixed by ``synthetic_seed``, not by the run seed, like a real dataset.
    ``workers``, ``imagenet_crop_size`` and ``imagenet_resize_size`` apply to ImageNet only.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    if train_subset is not None and (isinstance(train_subset, bool) or not isinstance(train_subset, int)):
        raise ValueError(f"train_subset must be a positive int or None, got {train_subset!r}")
    test_batch_size = batch_size if test_batch_size is None else test_batch_size
    mean, std = MEANS_STDS[dataset]

    if dataset == "imagenet":
        from .imagenet import build_imagenet_loaders  # noqa: PLC0415 - keeps PIL/ImageFolder off the CIFAR path

        return build_imagenet_loaders(
            data_root,
            batch_size=batch_size // world_size,
            num_views=num_views,
            device=device,
            seed=seed,
            train_subset=train_subset,
            test_batch_size=test_batch_size,
            rank=rank,
            world_size=world_size,
            workers=workers,
            crop_size=imagenet_crop_size,
            resize_size=imagenet_resize_size,
            dtype=dtype,
        )

    if dataset == "synthetic":
        train, test, num_classes = make_synthetic(
            synthetic_classes, synthetic_train_size, synthetic_test_size, seed=synthetic_seed
        )
    else:
        train, test, num_classes = load_cifar(dataset, data_root, download=download)
    if train_subset is not None:
        train = train.subset(subset_indices(len(train), _check_subset(train_subset, len(train)), seed))
    common = dict(num_views=num_views, mean=mean, std=std, device=device, seed=seed, dtype=dtype)
    train_loader = DeviceLoader(train, batch_size=batch_size, train=True, **common)
    test_loader = DeviceLoader(test, batch_size=test_batch_size, train=False, **common)
    if world_size > 1:
        train_loader = ShardedDeviceLoader(train_loader, rank, world_size)
    return train_loader, test_loader, num_classes
