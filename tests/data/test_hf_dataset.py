"""The Hugging Face `datasets` loader on a save_to_disk folder and on parquet files the test builds."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from overparam.data.hf import load
from overparam.errors import UserError


def _split(rng, count: int, mode: str = "RGB"):
    from PIL import Image

    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (count, 6, 5, channels), dtype=np.uint8)
    images = [Image.fromarray(p if channels == 3 else p[..., 0], mode=mode) for p in pixels]
    labels = [int(i % 3) for i in range(count)]
    features = datasets.Features({"img": datasets.Image(), "target": datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict({"img": images, "target": labels}, features=features), pixels, labels


@pytest.fixture
def image_dataset(tmp_path):
    rng = np.random.default_rng(0)
    train, train_pixels, train_labels = _split(rng, 9)
    test, test_pixels, test_labels = _split(rng, 4)
    return datasets.DatasetDict({"train": train, "test": test}), train_pixels, train_labels, test_pixels, test_labels


def test_save_to_disk_folder_gives_channels_first_floats(tmp_path, image_dataset):
    dataset, train_pixels, train_labels, test_pixels, test_labels = image_dataset
    dataset.save_to_disk(str(tmp_path / "saved"))
    bundle = load(data_dir="unused", path=str(tmp_path / "saved"), image_column="img", label_column="target",
                  normalize=False)
    assert bundle.train_x.shape == (9, 3, 6, 5) and bundle.test_x.shape == (4, 3, 6, 5)
    assert bundle.train_x.dtype == torch.float32 and bundle.train_y.dtype == torch.int64
    assert bundle.num_classes == 3
    assert bundle.train_y.tolist() == train_labels and bundle.test_y.tolist() == test_labels
    expected = torch.from_numpy(train_pixels).permute(0, 3, 1, 2).float() / 255
    assert float((bundle.train_x - expected).abs().max()) < 1e-6
    normalized = load(data_dir="unused", path=str(tmp_path / "saved"), image_column="img", label_column="target")
    channel_mean = normalized.train_x.mean(dim=(0, 2, 3))
    channel_std = normalized.train_x.std(dim=(0, 2, 3))
    assert float(channel_mean.abs().max()) < 1e-5
    assert float((channel_std - 1).abs().max()) < 1e-5
    # The test split uses the training statistics, so it is standardized by the same affine map.
    train_raw, test_raw = expected, torch.from_numpy(test_pixels).permute(0, 3, 1, 2).float() / 255
    mean = train_raw.mean(dim=(0, 2, 3), keepdim=True)
    std = train_raw.std(dim=(0, 2, 3), keepdim=True)
    assert float((normalized.test_x - (test_raw - mean) / std).abs().max()) < 1e-4


def test_parquet_files_by_split_pattern_and_gray_images(tmp_path):
    rng = np.random.default_rng(1)
    train, train_pixels, _ = _split(rng, 6, mode="L")
    test, _, _ = _split(rng, 3, mode="L")
    train.to_parquet(str(tmp_path / "train.parquet"))
    test.to_parquet(str(tmp_path / "test.parquet"))
    bundle = load(data_dir="unused", path=str(tmp_path / "{split}.parquet"), image_column="img",
                  label_column="target", normalize=False, cache_dir=str(tmp_path / "cache"))
    assert bundle.train_x.shape == (6, 1, 6, 5) and bundle.test_x.shape == (3, 1, 6, 5)
    assert bundle.num_classes == 3
    expected = torch.from_numpy(train_pixels[..., 0]).float().unsqueeze(1) / 255
    assert float((bundle.train_x - expected).abs().max()) < 1e-6
    # A folder of parquet files named after their splits works too; a mode cast makes the gray images RGB.
    folder = load(data_dir="unused", path=str(tmp_path), image_column="img", label_column="target",
                  image_mode="RGB", cache_dir=str(tmp_path / "cache"))
    assert folder.train_x.shape == (6, 3, 6, 5)


def test_array_columns_and_string_labels(tmp_path):
    features = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    split = datasets.Dataset.from_dict({"x": features.tolist(), "y": ["cat", "dog", "cat", "ant", "dog"]})
    datasets.DatasetDict({"fit": split, "eval": split}).save_to_disk(str(tmp_path / "vectors"))
    bundle = load(data_dir="unused", path=str(tmp_path / "vectors"), image_column="x", label_column="y",
                  train_split="fit", test_split="eval", normalize=False)
    assert bundle.train_x.shape == (5, 4) and bundle.num_classes == 3
    assert bundle.train_y.tolist() == [1, 2, 1, 0, 2]  # sorted class names: ant, cat, dog
    assert torch.equal(bundle.train_x, torch.from_numpy(features))


def test_clear_errors(tmp_path, image_dataset):
    dataset = image_dataset[0]
    dataset.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match="no split 'validation'.*splits there: train, test"):
        load(data_dir="unused", path=str(tmp_path / "saved"), image_column="img", label_column="target",
             test_split="validation")
    with pytest.raises(UserError, match="no column 'image'"):
        load(data_dir="unused", path=str(tmp_path / "saved"), label_column="target")
    with pytest.raises(UserError, match="dataset.path is required"):
        load(data_dir="unused")


def test_unreachable_hub_id_is_one_clear_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # Offline mode, so the test never touches the network whatever the machine has.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as caught:
        load(data_dir="unused", path="no-such-user/no-such-dataset", cache_dir=str(tmp_path / "cache"))
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot load path='no-such-user/no-such-dataset'" in message
