"""The four IDX files of an MNIST-style set: found, verified, downloaded if missing, read into tensors.

Each file is used unpacked (`train-images-idx3-ubyte`) when that exists, else from its `.gz`,
whose md5 must match the official one (torchvision's table). A `.gz` is read in memory, so a
read-only folder of `.gz` files works as it is; where the folder is writable the file is also
unpacked beside it, which makes the next start faster. Every way a file can be wrong (missing,
corrupt, truncated, unreadable) raises `DataUnavailable` naming the file and what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import zlib
from pathlib import Path

import torch

from mlbasics import records

log = logging.getLogger(__name__)
# torchvision's class, and the folder under dataset.root that holds `raw/`.
TORCHVISION_DATASETS = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}
RAW_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_UBYTE = 0x08  # the only element type these sets use


class DataUnavailable(RuntimeError):
    """The dataset cannot be read; the message names the file, the cause and what to do."""


def read_dataset(name: str, root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw uint8 images (n, 28, 28) and int64 labels: the training pool, then the test set."""
    from torchvision import datasets  # imported here: the synthetic set must not pay for it

    cls = getattr(datasets, TORCHVISION_DATASETS[name])
    raw = Path(root) / TORCHVISION_DATASETS[name] / "raw"
    md5 = dict(cls.resources)
    missing = [gz for gz in RAW_FILES if not (raw / gz).exists() and not (raw / gz[:-3]).exists()]
    if missing:
        download(cls, raw, missing)
    arrays = [read_file(raw, gz, md5[gz]) for gz in RAW_FILES]
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise DataUnavailable(f"{raw}: {split}-images ({tuple(images.shape)}) and {split}-labels "
                                  f"({tuple(labels.shape)}) do not fit together; replace them with the genuine files")
    return train_x, train_y.long(), test_x, test_y.long()


def download(cls, raw: Path, missing: list[str]) -> None:
    """Fetch the missing `.gz` files from torchvision's mirrors, md5-checked; one line if impossible."""
    from torchvision.datasets.utils import download_url

    for gz in missing:
        errors = []
        for mirror in cls.mirrors:
            try:
                raw.mkdir(parents=True, exist_ok=True)
                download_url(f"{mirror}{gz}", str(raw), filename=gz, md5=dict(cls.resources)[gz])
                break
            except Exception as err:  # noqa: BLE001 - urllib, OSError and torchvision's RuntimeError alike
                errors.append(" ".join(str(err).split()) or type(err).__name__)
        else:
            raise DataUnavailable(
                f"{raw} lacks {', '.join(missing)} and downloading {gz} failed ({errors[-1][:200]}); "
                f"put {', '.join(RAW_FILES)} there or set dataset.root / MLBASICS_DATA")


def read_file(raw: Path, gz: str, md5: str) -> torch.Tensor:
    unpacked = raw / gz[:-3]
    if unpacked.exists():
        try:
            return parse_idx(unpacked.read_bytes())
        except ValueError as err:
            fix = (f"delete it and it is unpacked again from {gz}" if (raw / gz).exists()
                   else f"replace it with the genuine file (or put {gz} there instead)")
            raise DataUnavailable(f"{unpacked} is truncated or corrupt ({err}): {fix}") from None
        except OSError as err:
            raise DataUnavailable(f"{unpacked} cannot be read ({err.strerror or err})") from None
    packed = raw / gz
    try:
        content = packed.read_bytes()
    except OSError as err:
        raise DataUnavailable(f"{packed} cannot be read ({err.strerror or err})") from None
    found = hashlib.md5(content).hexdigest()
    if found != md5:
        raise DataUnavailable(f"{packed} is corrupt (md5 {found}, expected {md5}): replace it with the "
                              f"genuine file, or delete it to download it again")
    try:
        data = gzip.decompress(content)
        array = parse_idx(data)
    except (OSError, EOFError, zlib.error, ValueError) as err:  # only possible for a forged md5 match
        raise DataUnavailable(f"{packed} does not unpack to an IDX file ({err}): replace it") from None
    try:  # unpacked beside it for a faster next start; a read-only folder simply keeps reading the .gz
        records.write_atomically(unpacked, lambda tmp: tmp.write_bytes(data))
    except records.OutputError as err:
        log.debug("not unpacking %s: %s", packed, err)
    return array


def parse_idx(data: bytes) -> torch.Tensor:
    """LeCun's IDX format: magic (0, 0, type, ndim), ndim big-endian uint32 sizes, then the bytes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE or not 1 <= data[3] <= 3:
        raise ValueError("no IDX unsigned-byte header")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{len(data)} bytes, shorter than its header")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise ValueError(f"{len(data)} bytes where its header promises {expected}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).reshape(shape)
