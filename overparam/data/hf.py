"""Any Hugging Face `datasets` source as tensors: a hub id, a `save_to_disk` folder, or data files.

`path` is read as, in this order:
1. a folder written by `Dataset(Dict).save_to_disk` -> `datasets.load_from_disk`;
2. a file pattern with `{split}` (e.g. `data/{split}.parquet`) -> one file set per split;
3. a file or glob (`*.parquet`, `.arrow`, `.csv`, `.json[l]`) -> a single split named `train`;
4. another local folder -> `datasets.load_dataset(folder)` (splits from file names, e.g. train-*.parquet);
5. anything else -> a hub id, `datasets.load_dataset(path, name)` (needs internet or the HF cache).

Images (PIL images or arrays) become float32 tensors in bulk: one `with_format("numpy")` read
per split, then one vectorized conversion. Images are (N, C, H, W): PIL images and arrays whose
last axis has 1, 3 or 4 entries are taken as channels-last, 2-D arrays as one channel; 1-D
vectors stay (N, D). Normalization (documented in configs/dataset/hf.yaml): uint8 pixels (what
PIL images give) are divided by 255, other values are kept as they are, then with `normalize: true` each channel (or vector feature) is standardized
with the mean and std of the training split. `datasets` is imported only inside the loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from overparam.data.bundle import DataBundle
from overparam.errors import UserError

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _builder(pattern: str) -> str:
    suffix = Path(pattern.replace("*", "x")).suffix.lower()
    if suffix not in BUILDERS:
        raise UserError(f"dataset.path={pattern!r}: cannot tell the file format; use one of: {', '.join(BUILDERS)}")
    return BUILDERS[suffix]


def _open(path: str, name: str | None, train_split: str, test_split: str, cache_dir: str | None):
    """A DatasetDict (or dict of Datasets) for `path`, following the order in the module docstring."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.Dataset):
                raise UserError(f"dataset.path={path}: a single saved split; save a DatasetDict with "
                                f"'{train_split}' and '{test_split}' splits")
            return loaded
        if "{split}" in path:
            files = {split: str(Path(path.format(split=split)).expanduser()) for split in (train_split, test_split)}
            return datasets.load_dataset(_builder(path), data_files=files, cache_dir=cache_dir)
        if local.is_file() or any(ch in path for ch in "*?["):
            return datasets.load_dataset(_builder(path), data_files={"train": str(local)}, cache_dir=cache_dir)
        if local.is_dir():
            return datasets.load_dataset(str(local), name, cache_dir=cache_dir)
        return datasets.load_dataset(path, name, cache_dir=cache_dir)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, missing files, bad formats: one clear line each
        raise UserError(f"dataset hf: cannot load path={path!r} name={name!r} ({_one_line(exc)}); give a hub id "
                        f"(needs internet or the HF cache), a save_to_disk folder, or data files") from None


def _column_array(split, column: str) -> np.ndarray:
    """The whole column as one numpy array (images decoded and stacked by `datasets`)."""
    values = split.with_format("numpy", columns=[column])[:][column]
    array = np.asarray(values)
    if array.dtype == object:
        try:
            array = np.stack(list(values))
        except ValueError:
            raise UserError(f"dataset.image_column={column!r}: examples have different shapes; "
                            f"resize them to one size first") from None
    return array


def _to_tensor(array: np.ndarray, is_image_feature: bool, channels_last: bool | None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(array))
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    elif x.dim() == 4:
        if channels_last is None:
            channels_last = is_image_feature or (x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4))
        if channels_last:
            x = x.permute(0, 3, 1, 2)
    elif x.dim() != 2:
        raise UserError(f"dataset hf: cannot use examples of shape {tuple(x.shape[1:])} (want vectors or images)")
    if x.dtype == torch.uint8:  # 8-bit pixels -> [0, 1]
        return x.contiguous().float().div_(255.0)
    return x.contiguous().float()


def _labels(split, column: str) -> np.ndarray:
    return np.asarray(split.with_format("numpy", columns=[column])[:][column])


def load(data_dir: str, path: str | None = None, config_name: str | None = None, image_column: str = "image",
         label_column: str = "label", train_split: str = "train", test_split: str = "test",
         normalize: bool = True, image_mode: str | None = None, channels_last: bool | None = None,
         cache_dir: str | None = None) -> DataBundle:
    """A classification dataset from the Hugging Face `datasets` library, as float tensors."""
    if not path:
        raise UserError("dataset.path is required for dataset=hf (a hub id, a save_to_disk folder or data files)")
    import datasets

    splits = _open(str(path), config_name, train_split, test_split, cache_dir)
    for split_name in (train_split, test_split):
        if split_name not in splits:
            raise UserError(f"dataset hf: no split {split_name!r} in {path}; splits there: {', '.join(splits)}")
    train, test = splits[train_split], splits[test_split]
    for column in (image_column, label_column):
        if column not in train.column_names or column not in test.column_names:
            raise UserError(f"dataset hf: no column {column!r} in {path}; columns: {', '.join(train.column_names)}")
    feature = train.features[image_column]
    is_image_feature = isinstance(feature, datasets.Image)
    if image_mode is not None:
        if not is_image_feature:
            raise UserError(f"dataset.image_mode applies to image columns; {image_column!r} holds {feature}")
        train = train.cast_column(image_column, datasets.Image(mode=image_mode))
        test = test.cast_column(image_column, datasets.Image(mode=image_mode))
    train_x = _to_tensor(_column_array(train, image_column), is_image_feature, channels_last)
    test_x = _to_tensor(_column_array(test, image_column), is_image_feature, channels_last)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"dataset hf: train examples are {tuple(train_x.shape[1:])}, test {tuple(test_x.shape[1:])}")
    if normalize:
        dims = [0] + list(range(2, train_x.dim()))
        mean = train_x.mean(dim=dims, keepdim=True)
        std = train_x.std(dim=dims, keepdim=True).clamp_min(1e-8)
        train_x = train_x.sub_(mean).div_(std)
        test_x = test_x.sub_(mean).div_(std)
    train_y, test_y, num_classes = _encode_labels(train, test, label_column)
    return DataBundle(name=f"hf:{path}", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                      num_classes=num_classes)


def _encode_labels(train, test, column: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integer labels and the class count: a ClassLabel's own count, else max+1, strings sorted."""
    import datasets

    train_raw, test_raw = _labels(train, column), _labels(test, column)
    feature = train.features[column]
    if train_raw.dtype.kind in "USO":
        classes = np.unique(np.concatenate([train_raw, test_raw]).astype(str))
        train_codes = np.searchsorted(classes, train_raw.astype(str))
        test_codes = np.searchsorted(classes, test_raw.astype(str))
        return torch.from_numpy(train_codes).long(), torch.from_numpy(test_codes).long(), len(classes)
    if train_raw.dtype.kind not in "iu":
        raise UserError(f"dataset.label_column={column!r} holds {train_raw.dtype} values; want integers or strings")
    train_y, test_y = torch.from_numpy(train_raw.astype(np.int64)), torch.from_numpy(test_raw.astype(np.int64))
    if isinstance(feature, datasets.ClassLabel):
        num_classes = feature.num_classes
    else:
        num_classes = int(max(train_y.max(), test_y.max())) + 1 if len(train_y) else 0
    if min(int(train_y.min()), int(test_y.min())) < 0 or max(int(train_y.max()), int(test_y.max())) >= num_classes:
        raise UserError(f"dataset hf: labels in {column!r} fall outside [0, {num_classes})")
    return train_y, test_y, num_classes
