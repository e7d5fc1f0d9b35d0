"""What identifies the data a run reads, and where the files are: the CIFAR files' layout, the data root, md5 sums
of the files (cached), the data identity that enters the run_key. Imports no torch: `plan`, `status` and the
launcher compute run keys without it (pcl.tracking.data); the loaders (cifar.py) import from here.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

# name -> (directory, train files, test files, label key, number of classes, display name)
_LAYOUT: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, int, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        "CIFAR-10",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR-100"),
}

_DATA_ROOT_ENV = "PCL_DATA_ROOT"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$PCL_DATA_ROOT``, else ``./data`` (so clusters can point every job at one copy)."""
    if root is None or str(root) == "":
        root = os.environ.get(_DATA_ROOT_ENV) or "data"
    return Path(root).expanduser()


# ---- what identifies the data: checksums of the files actually read --------------------------------------------
#: (resolved path, size, mtime_ns) -> md5 hex digest; a file is hashed again only when it changes
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path, st: os.stat_result) -> tuple[str, int, int]:
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def file_md5(path: str | os.PathLike) -> str:
    """md5 (hex) of a file's bytes, cached by (path, size, mtime): ~0.3 s per CIFAR split the first time, then a
    stat. md5 because torchvision lists the official files' md5 sums."""
    path = Path(path)
    key = _stat_key(path, path.stat())
    if key not in _MD5_CACHE:
        digest = hashlib.md5(usedforsecurity=False)
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a FIFO would block forever, a device never end
                raise OSError(f"{path} is not a regular file")
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _MD5_CACHE[key] = digest.hexdigest()
    return _MD5_CACHE[key]


#: the official python-version files of CIFAR-10/100 and their md5 sums, as torchvision lists them (a test compares:
#: written out here so that planning never imports torchvision)
OFFICIAL_MD5S: dict[str, dict[str, str]] = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"},
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}


def official_md5s(name: str) -> dict[str, str]:
    """The official python-version files of CIFAR-10/100 and their md5 sums."""
    return dict(OFFICIAL_MD5S[name])


def identity_of_files(name: str, md5s: dict[str, str]) -> str | None:
    """The data identity of a set of CIFAR files (file name -> md5): None (neutral: the run_key is the one of
    runs on the official data) when they are torchvision's official files, else "md5:" + a digest of the file
    names and md5 sums, which does not depend on where the files are."""
    if md5s == official_md5s(name):
        return None
    text = ";".join(f"{file}={md5}" for file, md5 in sorted(md5s.items()))
    return "md5:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def cifar_fingerprint(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What identifies the CIFAR data under `root`: {"dataset", "files": {file: md5}, "official", "identity"}.

    `identity` is what the run_key hashes (pcl.schema key `data_identity`): None for the official files. Raises
    FileNotFoundError when a file is missing. Cheap after the first call (md5s cached by path, size, mtime).
    """
    if name not in _LAYOUT:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(_LAYOUT)}")
    dirname, train_files, test_files = _LAYOUT[name][:3]
    directory = resolve_data_root(root) / dirname
    md5s = {file: file_md5(directory / file) for file in (*train_files, *test_files)}
    identity = identity_of_files(name, md5s)
    return {"dataset": name, "files": md5s, "official": identity is None, "identity": identity}


# ---- ImageNet: class folders of train/ and val/ ---------------------------------------------------------------
_LAYOUT_HINT = (
    "ROOT/train/<class_name>/<image files> and ROOT/val/<class_name>/<image files> (the same class folders in "
    "both; the raw validation archive is flat and must first be sorted into class folders), where ROOT is the "
    "data root or its 'imagenet' subfolder"
)


def find_imagenet_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``train/`` and ``val/``: the data root itself or ``<data root>/imagenet``."""
    base = resolve_data_root(root)
    for candidate in (base, base / "imagenet"):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    raise FileNotFoundError(
        f"ImageNet not found under data root {str(base)!r} (looked for {str(base / 'train')!r} and "
        f"{str(base / 'imagenet' / 'train')!r} with their val/ siblings). Expected layout: {_LAYOUT_HINT}. "
        f"Set data_root or the PCL_DATA_ROOT environment variable to that folder."
    )


#: the image files a class folder holds (torchvision's ImageFolder extensions)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderError(OSError):
    """An entry under the ImageNet root that is not read: a link that leaves the root or loops, a folder or
    special file inside a class folder, an empty image file, a class folder without images. The message names
    it, in one line. (An OSError, like a missing folder: the data check turns it into exit 2 before any record.)"""


def _inside(path: str, root_real: str) -> bool:
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def _link_target(entry: os.DirEntry, root_real: str) -> str:
    """Where a link inside the data root points; ImageFolderError when that is outside the root."""
    target = os.path.realpath(entry.path)
    if not _inside(target, root_real):
        raise ImageFolderError(f"{entry.path}: a link that leaves the data root {root_real} (-> {target})")
    return target


def _class_folders(split_dir: Path, root_real: str) -> list[str]:
    """The class folders of train/ or val/ (sorted; dot folders ignored), each checked: a link must stay inside
    the data root and must not point at a folder that contains it (a loop); so must train/ or val/ itself."""
    split_real = os.path.realpath(split_dir)
    if not _inside(split_real, root_real):
        raise ImageFolderError(f"{split_dir}: a link that leaves the data root {root_real} (-> {split_real})")
    names = []
    with os.scandir(split_dir) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_symlink():
                target = _link_target(e, root_real)
                if _inside(split_real, target):
                    raise ImageFolderError(f"{e.path}: a link to a folder that contains it (-> {target}): a loop")
            if e.is_dir():
                names.append(e.name)
    return sorted(names)


def _class_images(folder: Path, root_real: str) -> list[str]:
    """The image file names of one class folder (sorted; dot files and other file types ignored), every entry
    checked first: no folder inside it, no link that leaves the root or is broken, no special file (a FIFO or a
    device would hang the reader), no empty image file, at least one image."""
    names = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_symlink():
                target = _link_target(e, root_real)
                try:
                    info = os.stat(target)
                except OSError as err:
                    raise ImageFolderError(f"{e.path}: a broken link ({err.strerror})") from None
            else:
                info = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                raise ImageFolderError(f"{e.path}: a folder inside a class folder (class folders hold image files; "
                                       "nested folders are not read)")
            if not e.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ImageFolderError(f"{e.path}: not a regular file")
            if info.st_size == 0:
                raise ImageFolderError(f"{e.path}: an empty image file")
            names.append(e.name)
    if not names:
        raise ImageFolderError(f"{folder}: a class folder without images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(names)


#: (class folder, data root, mtime_ns) -> (sha256 of its sorted image names, number of images); a folder's mtime
#: changes when files are added, removed or renamed in it
_LISTING_CACHE: dict[tuple[str, str, int], tuple[str, int]] = {}


def _folder_listing(folder: Path, root_real: str) -> tuple[str, int]:
    key = (str(folder.resolve()), root_real, folder.stat().st_mtime_ns)
    if key not in _LISTING_CACHE:
        names = _class_images(folder, root_real)
        _LISTING_CACHE[key] = (hashlib.sha256("\n".join(names).encode()).hexdigest(), len(names))
    return _LISTING_CACHE[key]


def scan_imagenet(root: str | os.PathLike | None = None) -> dict[str, tuple[list[str], list[tuple[str, int]]]]:
    """What the ImageNet loader reads: {"train" | "val": (class names, [(image path, class index)])}, from the
    same checked listing as imagenet_fingerprint (so both see the same files). ImageFolderError (one line naming
    the entry) or FileNotFoundError when the layout is not there."""
    base = find_imagenet_root(root)
    root_real = os.path.realpath(base)
    out = {}
    for split in ("train", "val"):
        classes = _class_folders(base / split, root_real)
        if not classes:
            raise FileNotFoundError(f"no class folder in {base / split}")
        samples = [(str(base / split / name / image), index) for index, name in enumerate(classes)
                   for image in _class_images(base / split / name, root_real)]
        out[split] = (classes, samples)
    return out


def imagenet_fingerprint(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What identifies the ImageNet data under `root`: a digest of the file list (class folders and file names of
    train/ and val/, not their contents: hashing 150 GB per launch is not cheap), with the image counts.

    {"dataset": "imagenet", "train_images", "val_images", "classes", "official": False, "identity": "files:..."}.
    Independent of where the folders are; cached per class folder by its mtime (one scandir per folder the first
    time). FileNotFoundError when the layout is not there.
    """
    base = find_imagenet_root(root)
    root_real = os.path.realpath(base)
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    classes = 0
    for split in ("train", "val"):
        folders = _class_folders(base / split, root_real)  # checked: links stay inside the root, no loop
        classes = max(classes, len(folders))
        counts[split] = 0
        for name in folders:
            listing, n = _folder_listing(base / split / name, root_real)
            digest.update(f"{split}/{name}:{listing}:{n};".encode())
            counts[split] += n
    return {"dataset": "imagenet", "train_images": counts["train"], "val_images": counts["val"],
            "classes": classes, "official": False, "identity": "files:" + digest.hexdigest()[:16]}
