"""ImageNet (ILSVRC-2012) from the standard ``train/<class>/*`` and ``val/<class>/*`` folders.

JPEG decoding needs CPU workers, so this uses torchvision's ImageFolder and a DataLoader, wrapped to the same contract
as DeviceLoader: ``set_epoch``, ``len``, ``num_images``, and iteration yields ``(views on device, labels on device)``.
Reconstructed (not stated in the paper): train RandomResizedCrop(224) + horizontal flip, ``num_views`` independent views
per image; test Resize(256) + CenterCrop(224).

Deliberate choices (speed: decoding and augmentation in worker processes, the device never waits on them):
* Workers ship uint8 tensors and normalisation ((x/255 - mean)/std, identical to ToTensor + Normalize up to
  float rounding) runs on the device: four times less host-to-device traffic and worker CPU.
* Each sample's augmentation is seeded from (seed, epoch, index), so the draws are a pure function of those
  and do not depend on the number of workers or on which worker loads which sample; resume is exact. The
  sampler hands the epoch to the workers with every index, so the workers persist across epochs.
* Batches come from pinned memory; on CUDA the next batch is copied (non-blocking) and normalised on a side
  stream while the current one trains.
* Distributed training (pcl.distributed): with ``rank``/``world_size`` the train split is sharded like a
  DistributedSampler, but batch-wise: global batch ``i`` (``batch_size * world_size`` images of the one shuffled
  order) is split into ``world_size`` consecutive slices, so N ranks see together exactly what one process with
  the global batch would.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import MEANS_STDS, apply_affine, normalization_affine
from .fingerprint import _LAYOUT_HINT, find_imagenet_root, scan_imagenet
from .draws import epoch_seed, subset_indices

def _scanned_folder(datasets: Any, split_dir: Any, classes: list[str], samples: list[tuple[str, int]]) -> Any:
    """torchvision's ImageFolder over the files of fingerprint.scan_imagenet (its own walk would follow every
    link, loops included, and read files the fingerprint does not list)."""

    class ScannedFolder(datasets.ImageFolder):
        def find_classes(self, directory: Any) -> tuple[list[str], dict[str, int]]:
            return list(classes), {name: i for i, name in enumerate(classes)}

        def make_dataset(self, *args: Any, **kwargs: Any) -> list[tuple[str, int]]:
            return list(samples)

    return ScannedFolder(str(split_dir))


class MultiView:
    """Applies a random ``transform`` ``num_views`` times to one image and returns the list of results."""

    def __init__(self, transform: Callable[[Any], Tensor], num_views: int) -> None:
        self.transform = transform
        self.num_views = num_views

    def __call__(self, img: Any) -> list[Tensor]:
        return [self.transform(img) for _ in range(self.num_views)]


class _SeededImages(Dataset):
    """ImageFolder samples (optionally a subset) whose random transform is seeded per (seed, epoch, index)."""

    def __init__(self, folder: Any, indices: Tensor | None, transform: Callable[[Any], Any], seed: int,
                 random: bool) -> None:
        self.folder = folder
        self.indices = None if indices is None else indices.tolist()
        self.transform = transform
        self.seed = seed
        self.random = random
        self.epoch = 0  # set in the main process before workers are (re)started each epoch

    def __len__(self) -> int:
        return len(self.folder) if self.indices is None else len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        j = i if self.indices is None else self.indices[i]
        path, target = self.folder.samples[j]
        img = self.folder.loader(path)
        if not self.random:
            return self.transform(img), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((epoch_seed(self.seed, epoch) * 1_000_000_007 + j) % (2**63))
            return self.transform(img), target


class _EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled (or sequential) order that is a pure function of (seed, epoch); yields (index, epoch) pairs.

    With world_size > 1 (train only, whole batches): this rank's slice of every global batch (module docstring).
    """

    def __init__(self, n: int, seed: int, shuffle: bool, batch_size: int = 1, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        return self.n // (self.batch_size * self.world_size) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        if self.world_size > 1:
            b, glob = self.batch_size, self.batch_size * self.world_size
            order = [order[k * glob + self.rank * b + t] for k in range(self.n // glob) for t in range(b)]
        epoch = self.epoch
        return iter([(i, epoch) for i in order])


class ImageNetLoader:
    """DataLoader over class folders with DeviceLoader's contract (see module docstring)."""

    def __init__(
        self,
        dataset: _SeededImages,
        *,
        batch_size: int,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        seed: int,
        workers: int,
        drop_last: bool | None = None,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.dtype = dtype
        self.seed = int(seed)
        self.epoch = 0
        self._scale, self._shift = normalization_affine(mean, std, self.device)
        if world_size > 1 and not (self.train and self.drop_last):
            raise ValueError("only the train loader (drop_last=True) is sharded over ranks; evaluate on rank 0")
        self.sampler = _EpochSampler(len(dataset), self.seed, shuffle=self.train, batch_size=self.batch_size,
                                     rank=rank, world_size=world_size)
        if self.drop_last and len(dataset) < self.batch_size * world_size:
            raise ValueError(f"{len(dataset)} images, fewer than batch_size={self.batch_size} x world_size="
                             f"{world_size} with drop_last")
        on_cuda = self.device.type == "cuda"
        # The sampler passes the epoch with each index, so the workers can persist across epochs.
        self.loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=on_cuda,
            drop_last=self.drop_last,
            prefetch_factor=4 if workers > 0 else None,
            persistent_workers=workers > 0,
        )

    @property
    def dataset_size(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.drop_last else self.dataset_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        epoch = self.epoch  # set through set_epoch only: iterating has no side effects
        self.sampler.epoch = epoch
        self.dataset.epoch = epoch
        return self._iterate()

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        return apply_affine(x, self._scale, self._shift, self.dtype)

    def _batch_to_device(self, views: Tensor | list[Tensor], labels: Tensor) -> tuple[list[Tensor], Tensor]:
        if isinstance(views, Tensor):
            views = [views]
        return [self._to_device(v) for v in views], labels.to(self.device, non_blocking=True)

    def _iterate(self) -> Iterator[tuple[list[Tensor], Tensor]]:
        if self.device.type != "cuda":
            for views, labels in self.loader:
                yield self._batch_to_device(views, labels)
            return
        # Copy + normalise batch k+1 on a side stream while batch k trains on the current stream.
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        batches = iter(self.loader)

        def stage():
            batch = next(batches, None)
            if batch is None:
                return None
            side.wait_stream(main)  # the side stream's new buffers may reuse memory the main stream freed
            with torch.cuda.stream(side):
                return self._batch_to_device(*batch)

        staged = stage()
        while staged is not None:
            main.wait_stream(side)
            views, labels = staged
            for t in (*views, labels):
                t.record_stream(main)  # allocated on the side stream, used on the main one
            staged = stage()
            yield views, labels


def build_imagenet_loaders(
    data_root: str | os.PathLike | None = None,
    *,
    batch_size: int,
    num_views: int,
    device: torch.device | str,
    seed: int,
    train_subset: int | None = None,
    test_batch_size: int | None = None,
    workers: int = 8,
    crop_size: int = 224,
    resize_size: int = 256,
    dtype: torch.dtype = torch.float32,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[ImageNetLoader, ImageNetLoader, int]:
    """``(train_loader, test_loader, num_classes)`` from ``train/`` and ``val/`` class folders.

    ``rank``/``world_size``: shard the train split over the ranks of a distributed run (``batch_size`` is then
    the per-rank batch); the test loader is not sharded (rank 0 evaluates).
    """
    from torchvision import datasets, transforms  # noqa: PLC0415 - torchvision import is slow; only here

    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    root = find_imagenet_root(data_root)
    try:  # the checked listing the fingerprint hashes (links inside the root only, no loops): the same files
        scanned = scan_imagenet(root)
        train_folder = _scanned_folder(datasets, root / "train", *scanned["train"])
        val_folder = _scanned_folder(datasets, root / "val", *scanned["val"])
    except FileNotFoundError as e:  # e.g. no class sub-folders, or no images in one
        raise FileNotFoundError(f"ImageNet under {str(root)!r} is not in the expected layout ({e}). "
                                f"Expected: {_LAYOUT_HINT}.") from e
    if val_folder.class_to_idx != train_folder.class_to_idx:
        raise ValueError(
            f"ImageNet train/ and val/ under {str(root)!r} have different class folders "
            f"({len(train_folder.classes)} vs {len(val_folder.classes)}); expected: {_LAYOUT_HINT}"
        )
    indices = None
    if train_subset is not None:
        n = len(train_folder)
        if isinstance(train_subset, bool) or not isinstance(train_subset, int) or not 1 <= train_subset <= n:
            raise ValueError(f"train_subset must be an int in 1..{n} (the train split size), got {train_subset!r}")
        indices = subset_indices(n, train_subset, seed)

    train_tf = MultiView(
        transforms.Compose(
            [transforms.RandomResizedCrop(crop_size), transforms.RandomHorizontalFlip(), transforms.PILToTensor()]
        ),
        num_views,
    )
    test_tf = transforms.Compose(
        [transforms.Resize(resize_size), transforms.CenterCrop(crop_size), transforms.PILToTensor()]
    )
    mean, std = MEANS_STDS["imagenet"]
    common = dict(mean=mean, std=std, device=device, seed=seed, workers=workers, dtype=dtype)
    train_loader = ImageNetLoader(
        _SeededImages(train_folder, indices, train_tf, seed, random=True), batch_size=batch_size, train=True,
        rank=rank, world_size=world_size, **common,
    )
    test_loader = ImageNetLoader(
        _SeededImages(val_folder, None, test_tf, seed, random=False),
        batch_size=batch_size if test_batch_size is None else test_batch_size, train=False, **common,
    )
    return train_loader, test_loader, len(train_folder.classes)
