"""Batched, on-device CIFAR augmentation: random crop with zero padding + horizontal flip, then normalisation.

Why on the device: a 3-view method needs three augmented copies of every batch; a CPU loader with few workers
caps such a method at the workers' decode/augment rate (the naive column of bench/throughput.py measures it),
while one gather on the GPU costs microseconds.
All randomness comes from an explicit ``torch.Generator`` living on the same device, so a loader can make the
draws a pure function of (seed, epoch) and no host synchronisation is ever needed.

Semantics are exactly torchvision's ``RandomCrop(32, padding=4)`` (constant zero fill) followed by
``RandomHorizontalFlip(0.5)``, drawn independently per sample and per view (Wu & Gong 2021: every peer gets its own
random augmentation of the input).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Per-channel mean/std on the 0..1 scale. CIFAR values are the training-set statistics used by the OKDDip
# codebase that PCL shares its recipe with; ImageNet the usual torchvision values; synthetic matches the
# statistics of pcl.data.synthetic.make_synthetic (about 0.5 / 0.17 per channel).
MEANS_STDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "synthetic": ((0.5, 0.5, 0.5), (0.17, 0.17, 0.17)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def sample_crop_flip(
    batch_size: int | Sequence[int],
    generator: torch.Generator,
    device: torch.device | str | None = None,
    padding: int = 4,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw crop offsets ``dy, dx`` (int64, uniform in ``0..2*padding``) and ``flip`` (bool, p=1/2).

    ``batch_size`` may be a shape (e.g. ``(num_views, B)``) to draw several views in one kernel each.
    The tensors are created on ``device`` (default: the generator's device) from ``generator``.
    """
    shape = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
    device = generator.device if device is None else torch.device(device)
    dy = torch.randint(0, 2 * padding + 1, shape, generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, shape, generator=generator, device=device)
    flip = torch.randint(0, 2, shape, generator=generator, device=device).bool()
    return dy, dx, flip


def crop_flip(images_u8: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    """Zero-padded random crop + optional horizontal flip per sample, as ONE batched gather.

    ``images_u8``: ``[B, C, H, W]``; ``dy, dx, flip``: ``[..., B]`` (a leading view dimension yields several
    views of the same batch at once). Output ``[..., B, C, H, W]``, same dtype, contiguous. Sample ``b`` equals
    ``hflip?(pad(img_b, padding)[:, dy_b:dy_b+H, dx_b:dx_b+W])``.
    """
    if images_u8.dim() != 4:
        raise ValueError(f"crop_flip expects images [B, C, H, W], got shape {tuple(images_u8.shape)}")
    b, c, h, w = images_u8.shape
    if dy.shape != dx.shape or dy.shape != flip.shape or dy.shape[-1:] != (b,):
        raise ValueError(
            f"dy/dx/flip must share a shape ending in the batch size {b}: "
            f"got {tuple(dy.shape)}, {tuple(dx.shape)}, {tuple(flip.shape)}"
        )
    lead = dy.shape[:-1]
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = F.pad(images_u8, (padding, padding, padding, padding)) if padding else images_u8
    padded = padded.reshape(b, c, hp * wp)
    dev = images_u8.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy.unsqueeze(-1) + ar_h  # [..., B, H]
    cols = dx.unsqueeze(-1) + torch.where(flip.unsqueeze(-1), ar_w.flip(0), ar_w)  # flip folded into the index
    index = (rows.unsqueeze(-1) * wp + cols.unsqueeze(-2)).reshape(*lead, b, 1, h * w)
    index = index.expand(*lead, b, c, h * w)
    source = padded.expand(*lead, b, c, hp * wp)
    return torch.gather(source, -1, index).view(*lead, b, c, h, w)


def normalization_affine(
    mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` of shape ``[C, 1, 1]`` with ``x * scale + shift == (x / 255 - mean) / std``.

    Loaders compute this once so that normalising a batch is a single fused kernel.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def apply_affine(images_u8: Tensor, scale: Tensor, shift: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``images * scale + shift`` in fp32, returned as ``dtype`` (see normalization_affine)."""
    out = torch.addcmul(shift, images_u8.to(torch.float32), scale)
    return out if dtype == torch.float32 else out.to(dtype)


def normalize(
    images_u8: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(x / 255 - mean) / std`` per channel (channel dim = -3), computed in fp32 and returned as ``dtype``.

    Elementwise only, so a channels_last input stays channels_last.
    """
    scale, shift = normalization_affine(mean, std, images_u8.device)
    return apply_affine(images_u8, scale, shift, dtype)


def augment_views(
    images_u8: Tensor, num_views: int, generator: torch.Generator, padding: int = 4
) -> list[Tensor]:
    """``num_views`` independent crop+flip views of one batch (uint8), drawn with ``generator``.

    Draws for all views come from one call per parameter, so K views cost the same number of kernels as one.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    dy, dx, flip = sample_crop_flip((num_views, images_u8.shape[0]), generator, images_u8.device, padding)
    return list(crop_flip(images_u8, dy, dx, flip, padding).unbind(0))
