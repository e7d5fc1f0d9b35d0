"""Tests of pcl.data: CIFAR files in the original layout, synthetic data, on-device augmentation and loaders,
and the ImageNet folder loader. Everything is built in tmp_path; nothing is downloaded."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_data import CIFAR10_DIR, CIFAR100_DIR, write_cifar10, write_cifar100
from pcl.data import (
    DATASETS,
    MEANS_STDS,
    NUM_CLASSES,
    ArraySplit,
    DeviceLoader,
    augment_views,
    build_loaders,
    crop_flip,
    load_cifar,
    make_synthetic,
    normalize,
    sample_crop_flip,
)


# ----------------------------------------------------------------------------------------------------------
# statistics helpers (no scipy in the core environment)


def chi2_sf_even_df(x: float, df: int) -> float:
    """Survival function of the chi-square distribution for even ``df`` (closed form)."""
    assert df % 2 == 0
    half = x / 2.0
    term, total = 1.0, 1.0
    for i in range(1, df // 2):
        term *= half / i
        total += term
    return math.exp(-half) * total


def uniform_chi2_p(values: torch.Tensor, bins: int) -> float:
    counts = torch.bincount(values, minlength=bins).double()
    expected = values.numel() / bins
    return chi2_sf_even_df(float(((counts - expected) ** 2 / expected).sum()), bins - 1 + (bins - 1) % 2)


def independence_chi2_p(a: torch.Tensor, b: torch.Tensor, bins: int) -> float:
    table = torch.bincount(a * bins + b, minlength=bins * bins).double().view(bins, bins)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    df = (bins - 1) ** 2
    return chi2_sf_even_df(float(((table - expected) ** 2 / expected).sum()), df + df % 2)


def test_chi2_helper_matches_known_quantiles():
    # chi-square 0.95 quantiles: df=8 -> 15.507, df=64 -> 83.675
    assert chi2_sf_even_df(15.507, 8) == pytest.approx(0.05, abs=1e-3)
    assert chi2_sf_even_df(83.675, 64) == pytest.approx(0.05, abs=1e-3)


# ----------------------------------------------------------------------------------------------------------
# CIFAR files


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_load_cifar10_roundtrip(tmp_path, style):
    written = write_cifar10(tmp_path, per_batch=6, test_size=7, style=style)
    # a known pixel in data_batch_2, image 3: channel 1 (G), row 5, col 7 -> flat index 1*1024 + 5*32 + 7
    path = tmp_path / CIFAR10_DIR / "data_batch_2"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"][3, 1 * 1024 + 5 * 32 + 7] = 201
    batch[b"data"][3, 2 * 1024 + 31 * 32 + 0] = 17  # B, last row, first column
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)

    train, test, num_classes = load_cifar("cifar10", tmp_path)
    assert num_classes == 10
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.shape == (30,) and train.labels.dtype == torch.int64
    assert test.images.shape == (7, 3, 32, 32)
    assert train.images[6 + 3, 1, 5, 7] == 201
    assert train.images[6 + 3, 2, 31, 0] == 17
    expected = written["train"][0].copy()
    expected[9, 1, 5, 7], expected[9, 2, 31, 0] = 201, 17
    np.testing.assert_array_equal(train.images.numpy(), expected)
    np.testing.assert_array_equal(train.labels.numpy(), written["train"][1])
    np.testing.assert_array_equal(test.images.numpy(), written["test"][0])
    np.testing.assert_array_equal(test.labels.numpy(), written["test"][1])


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_load_cifar100_roundtrip_uses_fine_labels(tmp_path, style):
    written = write_cifar100(tmp_path, train_size=12, test_size=5, style=style)
    train, test, num_classes = load_cifar("cifar100", tmp_path)
    assert num_classes == 100
    np.testing.assert_array_equal(train.images.numpy(), written["train"][0])
    np.testing.assert_array_equal(train.labels.numpy(), written["train"][1])
    np.testing.assert_array_equal(test.images.numpy(), written["test"][0])
    np.testing.assert_array_equal(test.labels.numpy(), written["test"][1])
    assert train.labels.max() == 99  # fine labels, not the 20 coarse ones


def test_build_loaders_reads_cifar_files(tmp_path):
    written = write_cifar10(tmp_path, per_batch=8, test_size=10)
    train, test, num_classes = build_loaders(
        "cifar10", data_root=tmp_path, batch_size=4, num_views=2, device="cpu", seed=0
    )
    assert num_classes == 10
    assert len(train) == 10 and train.num_images == 40
    xs, ys = zip(*[(views[0], y) for views, y in test])
    mean, std = MEANS_STDS["cifar10"]
    expected = (torch.from_numpy(written["test"][0]).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(torch.cat(xs), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), written["test"][1])
    views, y = next(iter(train))
    assert len(views) == 2 and views[0].shape == (4, 3, 32, 32) and views[0].dtype == torch.float32


def test_data_root_from_env(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path / "shared")
    monkeypatch.setenv("PCL_DATA_ROOT", str(tmp_path / "shared"))
    train, _, _ = load_cifar("cifar100")
    np.testing.assert_array_equal(train.images.numpy(), written["train"][0])
    _, test, n = build_loaders("cifar100", batch_size=5, num_views=1, device="cpu", seed=0)
    assert n == 100 and test.num_images == 5
    # an explicit root wins over the environment
    monkeypatch.setenv("PCL_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_cifar("cifar100")
    load_cifar("cifar100", tmp_path / "shared")


def test_missing_files_error_names_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar("cifar10", tmp_path)
    msg = str(info.value)
    for needle in (str(tmp_path), CIFAR10_DIR, "data_batch_1", "data_batch_5", "test_batch", "download=True",
                   "PCL_DATA_ROOT"):
        assert needle in msg
    with pytest.raises(FileNotFoundError, match=CIFAR100_DIR):
        build_loaders("cifar100", data_root=tmp_path, batch_size=4, num_views=1, device="cpu", seed=0)
    # a partial copy names what is missing
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_DIR / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing: data_batch_3"):
        load_cifar("cifar10", tmp_path)


def test_download_goes_through_torchvision_then_reads_files(tmp_path, monkeypatch):
    """No network here: a stand-in for torchvision's CIFAR100 class writes the files where it is asked to."""
    import torchvision

    calls = []

    def fake_cifar100(root, train=True, download=False, **kw):
        calls.append((root, download))
        write_cifar100(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake_cifar100)
    train, _, n = load_cifar("cifar100", tmp_path / "new", download=True)
    assert calls == [(str(tmp_path / "new"), True)] and n == 100 and len(train) == 12
    load_cifar("cifar100", tmp_path / "new", download=True)  # files present: no second download
    assert len(calls) == 1


def test_unknown_dataset_lists_allowed():
    with pytest.raises(ValueError) as info:
        build_loaders("mnist", batch_size=4, num_views=1, device="cpu", seed=0)
    for name in ("mnist", *DATASETS):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="cifar10"):
        load_cifar("cifar1000")


def test_malicious_pickle_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(tmp_path / CIFAR10_DIR / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_cifar("cifar10", tmp_path)


def test_bad_labels_are_rejected(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / CIFAR10_DIR / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["labels"][0] = 10
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match="labels outside 0..9"):
        load_cifar("cifar10", tmp_path)


# ----------------------------------------------------------------------------------------------------------
# augmentation


def coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """Channel 0 = 1 + row, channel 1 = 1 + col, channel 2 = 1 + image index % 250; 0 only in padding."""
    ar = torch.arange(size, dtype=torch.uint8) + 1
    img = torch.empty(n, 3, size, size, dtype=torch.uint8)
    img[:, 0] = ar.view(size, 1)
    img[:, 1] = ar.view(1, size)
    img[:, 2] = (torch.arange(n) % 250 + 1).to(torch.uint8).view(n, 1, 1)
    return img


def recover_crop_flip(out: torch.Tensor, padding: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flip) from crops of coordinate_images, read at the centre (never padding for shifts <= 4)."""
    c = out.shape[-1] // 2
    rows = out[:, 0, c, c].long() - 1
    col_c, col_next = out[:, 1, c, c].long() - 1, out[:, 1, c, c + 1].long() - 1
    flip = col_next < col_c
    dy = rows - c + padding
    dx = col_c + padding - torch.where(flip, out.shape[-1] - 1 - c, c)
    return dy, dx, flip


def expected_crops(n_img: torch.Tensor, dy, dx, flip, size: int = 32, padding: int = 4) -> torch.Tensor:
    """Reference output for coordinate_images, built from the formula with zero padding."""
    ar = torch.arange(size)
    r = dy.view(-1, 1) + ar - padding  # source row per output row
    col = torch.where(flip.view(-1, 1), size - 1 - ar, ar)
    c = dx.view(-1, 1) + col - padding
    rv = (r >= 0) & (r < size)
    cv = (c >= 0) & (c < size)
    valid = rv.view(-1, size, 1) & cv.view(-1, 1, size)
    out = torch.zeros(len(dy), 3, size, size, dtype=torch.long)
    out[:, 0] = (r + 1).view(-1, size, 1).expand(-1, size, size)
    out[:, 1] = (c + 1).view(-1, 1, size).expand(-1, size, size)
    out[:, 2] = (n_img % 250 + 1).view(-1, 1, 1)
    return (out * valid.unsqueeze(1)).to(torch.uint8)


def test_sample_crop_flip_ranges():
    g = torch.Generator().manual_seed(0)
    dy, dx, flip = sample_crop_flip(1000, g, "cpu", padding=3)
    assert dy.dtype == dx.dtype == torch.int64 and flip.dtype == torch.bool
    assert dy.shape == dx.shape == flip.shape == (1000,)
    assert set(dy.tolist()) == set(range(7)) == set(dx.tolist())
    assert dy.device.type == "cpu"


def test_crop_flip_matches_torchvision_functional():
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    g = torch.Generator().manual_seed(1)
    for (h, w), padding in (((32, 32), 4), ((24, 20), 2)):
        n = 10
        images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
        dy, dx, flip = sample_crop_flip(n, g, "cpu", padding)
        dy[:2], dx[:2], flip[:2] = torch.tensor([0, 2 * padding]), torch.tensor([2 * padding, 0]), torch.tensor([True, False])
        out = crop_flip(images, dy, dx, flip, padding)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        for i in range(n):
            ref = tvf.pad(images[i], [padding], fill=0)
            ref = tvf.crop(ref, int(dy[i]), int(dx[i]), h, w)
            if flip[i]:
                ref = tvf.horizontal_flip(ref)
            assert torch.equal(out[i], ref), (i, int(dy[i]), int(dx[i]), bool(flip[i]))


def test_augment_views_shapes_and_determinism():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    a = augment_views(images, 3, torch.Generator().manual_seed(7))
    b = augment_views(images, 3, torch.Generator().manual_seed(7))
    assert len(a) == 3 and all(v.shape == images.shape and v.dtype == torch.uint8 for v in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError):
        augment_views(images, 0, torch.Generator())


def test_augmentation_distribution_through_device_loader():
    """Recover offsets and flips from the loader's OUTPUT and test their distribution and independence."""
    n, k = 20_000, 2
    images = coordinate_images(n)
    split = ArraySplit(images, torch.arange(n))
    loader = DeviceLoader(split, batch_size=1000, num_views=k, train=True, mean=(0, 0, 0), std=(1, 1, 1),
                          device="cpu", seed=123)
    views_u8, ids = [[] for _ in range(k)], []
    for views, y in loader:
        for j, v in enumerate(views):
            views_u8[j].append((v * 255).round().to(torch.uint8))
        ids.append(y)
    ids = torch.cat(ids)
    assert torch.equal(ids.sort().values, torch.arange(n))  # every image exactly once
    rec = []
    for j in range(k):
        out = torch.cat(views_u8[j])
        dy, dx, flip = recover_crop_flip(out)
        # every pixel matches the zero-padded crop formula (padding zeros exactly in the right border rows/cols)
        assert torch.equal(out, expected_crops(ids, dy, dx, flip))
        assert ((out == 0).all(1).all(2).sum(1) == (dy - 4).abs()).all()  # all-zero rows = vertical shift
        rec.append((dy, dx, flip))
        for offsets in (dy, dx):
            assert offsets.min() >= 0 and offsets.max() <= 8
            assert uniform_chi2_p(offsets, 9) > 1e-3
        assert abs(flip.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
        # neighbouring samples of a batch draw independently too
        assert independence_chi2_p(dy[0::2], dy[1::2], 9) > 1e-3
    (dy0, dx0, f0), (dy1, dx1, f1) = rec
    assert independence_chi2_p(dy0, dy1, 9) > 1e-3
    assert independence_chi2_p(dx0, dx1, 9) > 1e-3
    assert independence_chi2_p(dy0, dx0, 9) > 1e-3
    assert abs((f0 == f1).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
    assert (dy0 == dy1).double().mean().item() < 0.2  # ~1/9 if independent, 1 if views were shared


def test_normalize_values_dtype_and_memory_format():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = MEANS_STDS["cifar100"]
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    cl = normalize(x.contiguous(memory_format=torch.channels_last), mean, std, dtype=torch.bfloat16)
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.double(), ref, rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------------------------------------------
# synthetic data


def test_synthetic_deterministic_shapes_balanced():
    train, test, c = make_synthetic(num_classes=10, train_size=1000, test_size=200, seed=3)
    again, again_test, _ = make_synthetic(num_classes=10, train_size=1000, test_size=200, seed=3)
    assert c == 10
    assert train.images.shape == (1000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.images.shape == (200, 3, 32, 32)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert torch.equal(test.images, again_test.images)
    counts = torch.bincount(train.labels, minlength=10)
    assert counts.max() - counts.min() <= 1
    other, _, _ = make_synthetic(num_classes=10, train_size=1000, test_size=200, seed=4)
    assert not torch.equal(train.images, other.images)
    # the test split does not depend on the train size
    _, test_small, _ = make_synthetic(num_classes=10, train_size=10, test_size=200, seed=3)
    assert torch.equal(test.images, test_small.images)
    small, _, _ = make_synthetic(num_classes=4, train_size=8, test_size=8, image_size=16)
    assert small.images.shape == (8, 3, 16, 16)


def test_synthetic_is_separable_through_augmentation():
    """Nearest class mean on crop+flip views already beats chance by far, so a convnet can learn it."""
    train, test, c = make_synthetic(num_classes=10, train_size=2048, test_size=512, seed=0)
    g = torch.Generator().manual_seed(0)
    xtr = augment_views(train.images, 1, g)[0].float().flatten(1)
    xte = augment_views(test.images, 1, g)[0].float().flatten(1)
    centroids = torch.stack([xtr[train.labels == k].mean(0) for k in range(c)])
    acc = (torch.cdist(xte, centroids).argmin(1) == test.labels).double().mean().item()
    assert acc > 0.6


# ----------------------------------------------------------------------------------------------------------
# DeviceLoader


def labelled_images(n: int, num_classes: int = 10) -> ArraySplit:
    """Channel 0 encodes the label, channel 1 the image index (both survive a <= 4 px crop at the centre)."""
    labels = torch.arange(n) % num_classes
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = (20 * labels + 7).to(torch.uint8).view(n, 1, 1)
    images[:, 1] = (torch.arange(n) + 1).to(torch.uint8).view(n, 1, 1)
    images[:, 2] = 128
    return ArraySplit(images, labels)


def make_loader(split: ArraySplit, **kw) -> DeviceLoader:
    args = dict(batch_size=32, num_views=3, train=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), device="cpu",
                seed=5)
    args.update(kw)
    return DeviceLoader(split, **args)


def collect(loader: DeviceLoader) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    return [(views, y) for views, y in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(ya, yb) and all(torch.equal(va, vb) for va, vb in zip(xa, xb)) for (xa, ya), (xb, yb) in zip(a, b)
    )


def test_device_loader_same_seed_epoch_identical_and_resume():
    split = labelled_images(100)
    a, b = make_loader(split), make_loader(split)
    a.set_epoch(3)
    b.set_epoch(3)
    assert same_batches(collect(a), collect(b))
    # an uninterrupted run (epochs 0, 1, 2 through set_epoch) and a run resumed at epoch 2 see the same batches
    run = make_loader(split)
    epochs = []
    for epoch in range(3):
        run.set_epoch(epoch)
        epochs.append(collect(run))
    resumed = make_loader(split)
    resumed.set_epoch(2)
    assert same_batches(epochs[2], collect(resumed))
    assert not same_batches(epochs[0], epochs[1])
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])  # a fresh permutation per epoch
    other_seed = make_loader(split, seed=6)
    other_seed.set_epoch(2)
    assert not same_batches(epochs[2], collect(other_seed))


def test_device_loader_len_and_drop_last():
    split = labelled_images(100)
    train = make_loader(split)
    assert train.drop_last and len(train) == 3 and train.num_images == 96
    batches = collect(train)
    assert len(batches) == 3 and all(y.shape == (32,) for _, y in batches)
    keep = make_loader(split, drop_last=False)
    assert len(keep) == 4 and keep.num_images == 100
    sizes = [y.shape[0] for _, y in collect(keep)]
    assert sizes == [32, 32, 32, 4]
    test = make_loader(split, train=False)
    assert not test.drop_last and len(test) == 4 and test.num_images == 100
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_loader(labelled_images(10))


def test_device_loader_labels_follow_images_after_shuffle():
    split = labelled_images(250)
    loader = make_loader(split, drop_last=False)
    for _ in range(2):
        seen = []
        for views, y in loader:
            assert len(views) == 3
            centre = [(v[:, :, 16, 16] * 255).round().long() for v in views]
            for c in centre:
                assert torch.equal((c[:, 0] - 7) // 20, y)  # label encoded in the pixels matches the label
                assert torch.equal(c[:, 1], centre[0][:, 1])  # all views show the same image
            assert not torch.equal(views[0], views[1])  # but augmented independently
            seen.append(centre[0][:, 1] - 1)
        seen = torch.cat(seen)
        assert torch.equal(seen.sort().values, torch.arange(250))  # a permutation
        assert not torch.equal(seen, torch.arange(250))


def test_test_loader_is_ordered_unaugmented_normalised():
    train, test, _ = make_synthetic(num_classes=5, train_size=64, test_size=50, seed=1)
    mean, std = MEANS_STDS["synthetic"]
    loader = DeviceLoader(test, batch_size=16, num_views=3, train=False, mean=mean, std=std, device="cpu", seed=0)
    for _ in range(2):  # identical every epoch
        views, ys = zip(*collect(loader))
        assert all(len(v) == 1 for v in views)
        x = torch.cat([v[0] for v in views])
        ref = (test.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)
        assert torch.equal(torch.cat(ys), test.labels)


def test_device_loader_dtype():
    loader = make_loader(labelled_images(64), dtype=torch.bfloat16)
    views, y = next(iter(loader))
    assert views[0].dtype == torch.bfloat16 and y.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_loader_cuda_no_host_sync():
    train, test, _ = make_synthetic(train_size=1024, test_size=256)
    mean, std = MEANS_STDS["synthetic"]
    for split, is_train in ((train, True), (test, False)):
        loader = DeviceLoader(split, batch_size=128, num_views=3, train=is_train, mean=mean, std=std,
                              device="cuda", seed=0)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = [(views, y) for views, y in loader]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert out[0][0][0].is_cuda and out[0][1].is_cuda
    again = DeviceLoader(test, batch_size=128, num_views=3, train=False, mean=mean, std=std, device="cuda", seed=0)
    assert same_batches(out, collect(again))


# ----------------------------------------------------------------------------------------------------------
# build_loaders


def test_build_loaders_synthetic_and_subset():
    train, test, c = build_loaders("synthetic", batch_size=16, num_views=3, device="cpu", seed=0,
                                   synthetic_classes=7, synthetic_train_size=200, synthetic_test_size=40,
                                   test_batch_size=40)
    assert c == 7 and NUM_CLASSES["synthetic"] == 10 and NUM_CLASSES["cifar100"] == 100
    assert len(test) == 1 and train.num_images == 192
    views, y = next(iter(train))
    assert len(views) == 3 and views[0].shape == (16, 3, 32, 32)

    def subset_images(seed: int) -> torch.Tensor:
        tr, _, _ = build_loaders("synthetic", batch_size=8, num_views=1, device="cpu", seed=seed,
                                 synthetic_train_size=200, train_subset=50)
        assert tr.dataset_size == 50
        return tr.images

    assert torch.equal(subset_images(1), subset_images(1))
    assert not torch.equal(subset_images(1), subset_images(2))
    full, _, _ = make_synthetic(train_size=200)
    rows = full.images.flatten(1)
    assert all((rows == img.flatten()).all(1).any() for img in subset_images(1))  # a subset of the split
    for bad in (0, -1, 201, 1.5, True, "10"):
        with pytest.raises(ValueError, match="train_subset"):
            build_loaders("synthetic", batch_size=8, num_views=1, device="cpu", seed=0,
                          synthetic_train_size=200, train_subset=bad)


# ----------------------------------------------------------------------------------------------------------
# ImageNet folders

COLOURS = {"cat": (200, 40, 40), "dog": (30, 60, 220)}


def write_image_folders(root, per_class: dict[str, int]) -> None:
    from PIL import Image

    for split, n in per_class.items():
        for cls, colour in COLOURS.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (40 + 4 * i, 30), colour)
                img.save(d / (f"{i}.png" if i % 2 else f"{i}.JPEG"), **({} if i % 2 else {"quality": 95}))


def imagenet_loaders(root, workers: int = 0, **kw):
    args = dict(data_root=root, batch_size=4, num_views=2, device="cpu", seed=0, workers=workers,
                imagenet_crop_size=16, imagenet_resize_size=20)
    args.update(kw)
    return build_loaders("imagenet", **args)


def test_imagenet_folders(tmp_path):
    write_image_folders(tmp_path / "imagenet", {"train": 6, "val": 3})
    train, test, c = imagenet_loaders(tmp_path)  # found in the 'imagenet' subfolder of the data root
    assert c == 2
    assert len(train) == 3 and train.num_images == 12 and len(test) == 2 and test.num_images == 6
    mean, std = MEANS_STDS["imagenet"]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    train.set_epoch(1)
    first = collect(train)
    for views, y in first:
        assert len(views) == 2 and views[0].shape == (4, 3, 16, 16) and views[0].dtype == torch.float32
        for v in views:
            pixels = (v * s + m) * 255
            expected = torch.tensor([COLOURS["cat"], COLOURS["dog"]], dtype=torch.float32)[y]
            assert (pixels.mean((2, 3)) - expected).abs().max() < 8  # the image matches its label
    train.set_epoch(1)
    assert same_batches(first, collect(train))
    train.set_epoch(2)
    assert not same_batches(first, collect(train))
    views, ys = zip(*collect(test))
    assert all(len(v) == 1 and v[0].shape[1:] == (3, 16, 16) for v in views)
    assert torch.cat(ys).tolist() == [0, 0, 0, 1, 1, 1]


def test_imagenet_workers_do_not_change_the_draws(tmp_path):
    write_image_folders(tmp_path, {"train": 4, "val": 1})
    a, _, _ = imagenet_loaders(tmp_path, workers=0)
    b, _, _ = imagenet_loaders(tmp_path, workers=2)
    assert same_batches(collect(a), collect(b))


def test_imagenet_missing_or_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        imagenet_loaders(tmp_path)
    assert str(tmp_path) in str(info.value) and "train/<class_name>" in str(info.value)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="expected layout"):
        imagenet_loaders(tmp_path)


def test_the_device_resident_datasets_are_those_served_from_the_device(tmp_path):
    """pcl.recipes.DEVICE_RESIDENT (where fast_path=auto captures the step, read without torch by the launcher's
    cost) names exactly the datasets whose train loader the fast path can slice on the device."""
    from pcl.declarations import DATASETS
    from pcl.fastpath import has_draws
    from pcl.recipes import DEVICE_RESIDENT

    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_image_folders(tmp_path / "imagenet", {"train": 4, "val": 1})
    for dataset in DATASETS:
        if dataset == "imagenet":
            train, _, _ = imagenet_loaders(tmp_path)
        else:
            train, _, _ = build_loaders(dataset, data_root=tmp_path, batch_size=4, num_views=1, device="cpu", seed=0)
        assert has_draws(train) == (dataset in DEVICE_RESIDENT), dataset
