"""A small, seeded, CIFAR-shaped classification problem that needs no files.

Why: tests, smoke runs and GPU benchmarks must run where CIFAR cannot be downloaded. The task must be learnable
by a tiny convnet in a few epochs *through* the training augmentation (shifts up to 4 px and horizontal flips),
so each class is a per-channel colour mean plus a smooth low-frequency pattern (periods >= 16 px, which a 4 px
shift only partly changes); each image adds its own colour jitter, pattern strength and pixel noise.
"""
from __future__ import annotations

import math

import torch

from .cifar import ArraySplit


def _stream(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def _class_prototypes(num_classes: int, image_size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class colour means ``[K, 3]`` and zero-mean patterns ``[K, 3, S, S]`` (pixel units)."""
    colours = 72.0 + 112.0 * torch.rand(num_classes, 3, generator=g)
    coords = torch.arange(image_size, dtype=torch.float32) / image_size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    patterns = torch.zeros(num_classes, 3, image_size, image_size)
    for _ in range(2):  # two plane waves per class and channel, 1-2 cycles per image
        fy = torch.randint(-2, 3, (num_classes, 3, 1, 1), generator=g).float()
        fx = torch.randint(1, 3, (num_classes, 3, 1, 1), generator=g).float()
        phase = 2 * math.pi * torch.rand(num_classes, 3, 1, 1, generator=g)
        amp = 18.0 + 14.0 * torch.rand(num_classes, 3, 1, 1, generator=g)
        patterns += amp * torch.cos(2 * math.pi * (fx * xx + fy * yy) + phase)
    return colours, patterns


def _sample(
    colours: torch.Tensor, patterns: torch.Tensor, n: int, g: torch.Generator
) -> ArraySplit:
    num_classes, _, s, _ = patterns.shape
    labels = torch.arange(n) % num_classes  # balanced up to the remainder
    labels = labels[torch.randperm(n, generator=g)]
    strength = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    jitter = 10.0 * torch.randn(n, 3, 1, 1, generator=g)
    noise = 14.0 * torch.randn(n, 3, s, s, generator=g)
    x = colours[labels].view(n, 3, 1, 1) + jitter + strength * patterns[labels] + noise
    images = x.round_().clamp_(0, 255).to(torch.uint8)
    return ArraySplit(images, labels.to(torch.int64))


def make_synthetic(
    num_classes: int = 10,
    train_size: int = 2048,
    test_size: int = 512,
    seed: int = 0,
    image_size: int = 32,
) -> tuple[ArraySplit, ArraySplit, int]:
    """``(train, test, num_classes)`` of uint8 ``[N, 3, S, S]`` images; the same seed gives identical data.

    Train and test share the class prototypes and use separate random streams, so the test split does not
    depend on ``train_size``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if train_size < 1 or test_size < 1 or image_size < 1:
        raise ValueError(
            f"sizes must be positive, got train_size={train_size}, test_size={test_size}, image_size={image_size}"
        )
    colours, patterns = _class_prototypes(num_classes, image_size, _stream(seed, 0))
    train = _sample(colours, patterns, train_size, _stream(seed, 1))
    test = _sample(colours, patterns, test_size, _stream(seed, 2))
    return train, test, num_classes
