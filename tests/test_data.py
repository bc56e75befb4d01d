"""Loading through the real IDX reader, the stratified split, normalisation, batching."""

from __future__ import annotations

import gzip
import hashlib

import pytest
import torch
from omegaconf import OmegaConf

from mlbasics.config import DatasetConfig
from mlbasics.data import batch_indices, load_splits, stratified_split
from mlbasics.datafiles import RAW_FILES, DataUnavailable


def ds_cfg(root, **overrides):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"root": str(root), **overrides})


def test_split_sizes_and_stratification(idx_root):
    splits = load_splits(ds_cfg(idx_root, val_size=50), torch.device("cpu"))
    assert splits.train_x.shape == (250, 784) and splits.val_x.shape == (50, 784)
    assert splits.test_x.shape == (100, 784)
    # 30 images per class, 50 held out of 300: exactly 5 per class.
    assert torch.bincount(splits.val_y, minlength=10).tolist() == [5] * 10
    assert torch.bincount(splits.train_y, minlength=10).tolist() == [25] * 10


def test_split_is_fixed_by_split_seed_and_disjoint(idx_root):
    device = torch.device("cpu")
    a = load_splits(ds_cfg(idx_root, val_size=50, split_seed=0), device)
    b = load_splits(ds_cfg(idx_root, val_size=50, split_seed=0), device)
    c = load_splits(ds_cfg(idx_root, val_size=50, split_seed=1), device)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    # pixel 0 holds index % 256 and the other pixels are random: rows identify samples
    train_rows = {tuple(r) for r in a.train_x[:, :8].tolist()}
    val_rows = {tuple(r) for r in a.val_x[:, :8].tolist()}
    assert len(train_rows) == 250 and len(val_rows) == 50 and not train_rows & val_rows


def test_train_size_subsamples_the_pool_stratified(idx_root):
    splits = load_splits(ds_cfg(idx_root, train_size=100, val_size=20), torch.device("cpu"))
    assert len(splits.train_y) == 80 and len(splits.val_y) == 20
    assert torch.bincount(splits.train_y, minlength=10).tolist() == [8] * 10
    assert torch.bincount(splits.val_y, minlength=10).tolist() == [2] * 10
    again = load_splits(ds_cfg(idx_root, train_size=100, val_size=20), torch.device("cpu"))
    assert torch.equal(splits.train_x, again.train_x)


def test_normalised_with_training_statistics(idx_root):
    splits = load_splits(ds_cfg(idx_root, val_size=50), torch.device("cpu"))
    assert abs(splits.train_x.mean().item()) < 1e-5
    assert splits.train_x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert splits.train_x.dtype == torch.float32


def test_uneven_classes_get_proportional_quota():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val = stratified_split(labels, 10, seed=0)
    assert torch.bincount(labels[val]).tolist() == [5, 3, 2]
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    # 7 of 100: quotas 3.5, 2.1, 1.4 -> floors 3, 2, 1 and the largest remainder (0.5) gets the last one
    _, val7 = stratified_split(labels, 7, seed=0)
    assert torch.bincount(labels[val7]).tolist() == [4, 2, 1]


def test_missing_files_name_folder_and_files(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        load_splits(ds_cfg(tmp_path / "empty"), torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message


def test_synthetic_is_deterministic_and_sized():
    a = load_splits(ds_cfg("unused", name="synthetic", val_size=400), torch.device("cpu"))
    b = load_splits(ds_cfg("unused", name="synthetic", val_size=400), torch.device("cpu"))
    assert a.train_x.shape == (1600, 32) and a.val_x.shape == (400, 32) and a.test_x.shape == (500, 32)
    assert a.n_classes == 4 and torch.equal(a.train_x, b.train_x)


@pytest.mark.parametrize("n, batch_size, sizes", [
    (10, 4, [4, 4, 2]),
    (9, 4, [4, 5]),        # a trailing single sample joins the batch before it
    (5, 1, [1] * 5),       # batch size 1 stays 1: BatchNorm must fail there, as PyTorch says
    (1, 4, [1]),
])
def test_batches_cover_every_index_once(n, batch_size, sizes):
    batches = list(batch_indices(n, batch_size, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert [len(b) for b in batches] == sizes
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


@pytest.fixture
def gz_root(tmp_path, monkeypatch):
    """The miniature set as .gz files only, registered as the official files (their md5s)."""
    from torchvision import datasets

    from conftest import write_idx

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(5)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=gen), compress=True)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10, compress=True)
    md5 = [(gz, hashlib.md5((raw / gz).read_bytes()).hexdigest()) for gz in RAW_FILES]
    monkeypatch.setattr(datasets.FashionMNIST, "resources", md5)
    return tmp_path


def test_gz_files_are_read_and_unpacked_beside_themselves(gz_root):
    splits = load_splits(ds_cfg(gz_root, val_size=10), torch.device("cpu"))
    assert len(splits.train_y) == 50 and len(splits.test_y) == 20
    raw = gz_root / "FashionMNIST" / "raw"
    assert gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes()) == \
        (raw / "train-images-idx3-ubyte").read_bytes()


def test_read_only_folder_of_gz_files_is_read_in_memory(gz_root, monkeypatch):
    from mlbasics import records

    def read_only(path, write):
        raise records.OutputError(f"could not write {path}: Read-only file system")

    monkeypatch.setattr(records, "write_atomically", read_only)
    splits = load_splits(ds_cfg(gz_root, val_size=10), torch.device("cpu"))
    assert len(splits.train_y) == 50
    assert sorted(p.name for p in (gz_root / "FashionMNIST" / "raw").iterdir()) == sorted(RAW_FILES)


def test_corrupt_gz_is_named_with_its_md5(gz_root):
    gz = gz_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-3] + b"xyz")
    with pytest.raises(DataUnavailable) as err:
        load_splits(ds_cfg(gz_root, val_size=10), torch.device("cpu"))
    message = str(err.value)
    assert message.startswith(f"{gz} is corrupt (md5 ") and "expected" in message and "replace it" in message


@pytest.mark.parametrize("keep_gz", [True, False])
def test_truncated_unpacked_file_says_what_to_do(gz_root, keep_gz):
    load_splits(ds_cfg(gz_root, val_size=10), torch.device("cpu"))  # unpacks
    raw = gz_root / "FashionMNIST" / "raw"
    unpacked = raw / "train-images-idx3-ubyte"
    unpacked.write_bytes(unpacked.read_bytes()[:5000])
    if not keep_gz:
        (raw / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataUnavailable) as err:
        load_splits(ds_cfg(gz_root, val_size=10), torch.device("cpu"))
    message = str(err.value)
    assert message.startswith(f"{unpacked} is truncated or corrupt (5000 bytes where its header promises 47056)")
    assert ("delete it and it is unpacked again from train-images-idx3-ubyte.gz" in message) == keep_gz
    assert ("replace it with the genuine file" in message) != keep_gz
