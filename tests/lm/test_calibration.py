"""The calibration set of one-shot methods: seeded, hashed, cut from the train split only."""

import pytest
import torch

from overparam.data import text
from overparam.data.bundle import DataBundle
from overparam.errors import UserError
from overparam.recipes.shared import calibration


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("".join(f"line {i}: the quick brown fox {i * 7 % 13}\n" for i in range(400)))
    return text.load(str(tmp_path_factory.mktemp("data")), path=str(path), block_size=32)


def test_text_windows_are_seeded_and_hashed(corpus):
    a = calibration.draw(corpus, 8, 16, seed=0)
    b = calibration.draw(corpus, 8, 16, seed=0)
    c = calibration.draw(corpus, 8, 16, seed=1)
    assert a.inputs.shape == (8, 16) and a.inputs.dtype == torch.long
    assert a.digest == b.digest and torch.equal(a.inputs, b.inputs)
    assert c.digest != a.digest
    # Every window is a contiguous piece of one train block.
    rows = corpus.train_x
    for window in a.inputs:
        assert any(window.tolist() == row[o:o + 16].tolist() for row in rows for o in range(17))
    assert a.record() == {"samples": 8, "seq_len": 16, "seed": 0, "sha256": a.digest}


def test_default_length_is_the_block_and_longer_is_refused(corpus):
    assert calibration.draw(corpus, 4).inputs.shape == (4, 32)
    with pytest.raises(UserError, match="calib.seq_len=33"):
        calibration.draw(corpus, 4, 33)


def test_classifier_examples_without_replacement():
    x = torch.arange(50, dtype=torch.float32).reshape(10, 5)
    data = DataBundle(name="toy", train_x=x, train_y=torch.zeros(10), test_x=x, test_y=torch.zeros(10), num_classes=2)
    drawn = calibration.draw(data, 10, seed=3)
    assert sorted(drawn.inputs[:, 0].tolist()) == x[:, 0].tolist()
    with pytest.raises(UserError, match="calib.samples=11"):
        calibration.draw(data, 11)


def test_more_tokens_than_the_train_split_holds_is_refused(corpus):
    tokens = corpus.train_x.numel()
    calibration.draw(corpus, tokens // 16, 16)
    with pytest.raises(UserError, match=f"the train split holds {tokens}"):
        calibration.draw(corpus, tokens // 16 + 1, 16)
