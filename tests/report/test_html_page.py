"""`runner table --html`: one self-contained page, checked as text and as a screenshot of headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest
from report_helpers import base_config, make_run

from overparam.cli.main import main as runner

CLAIMS = [{"text": "CNN beats MLP", "source": "MNIST-1D", "expect": "acc(model=cnn1d) - acc(model=mlp) >= 0.05"},
          {"text": "MLP beats CNN", "source": "deliberately false", "expect": "acc(model=mlp) > acc(model=cnn1d)"}]


@pytest.fixture
def sweep(tmp_path):
    """A cnn_vs_mlp-like sweep over two seeds whose configs carry a true and a false claim, plus a failed job."""
    root = tmp_path / "sweep"
    for job, (model, accuracy) in enumerate((("mlp", 0.64), ("cnn1d", 0.86), ("mlp", 0.62), ("cnn1d", 0.84))):
        make_run(root / str(job), base_config(seed=job // 2, model={"name": model}, claims=CLAIMS),
                 {"test_accuracy": accuracy, "method": "dense"},
                 overrides=["experiment=cnn_vs_mlp", f"model={model}", f"seed={job // 2}"])
    make_run(root / "4", base_config(seed=2, model={"name": "mlp"}, claims=CLAIMS), None, status="failed",
             reason="FloatingPointError: <nan> & more", overrides=["model=mlp", "seed=2"])
    return root


def test_page_is_self_contained_with_table_figure_claims_and_configs(sweep, tmp_path, capsys):
    page = tmp_path / "results.html"
    assert runner(["table", str(sweep), "--html", str(page)]) == 0
    text = page.read_text()
    assert "<td>cnn1d</td><td>0.8500 ± 0.0141 (n=2)</td>" in text
    assert "<td>mlp</td><td>0.6300 ± 0.0141 (n=2) [1 failed]</td>" in text
    # Nothing outside the page: no links, scripts or remote images.
    assert not re.search(r"(src|href)=\"(?!data:)", text) and "<script" not in text and "http" not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count('class="claim pass"') == 1 and text.count('class="claim fail"') == 1
    assert "1/2 claims passed" in text and "measured: 0.2200 &gt;= 0.0500: yes" in text
    # The configs behind each row: every run's directory and overrides, the failed one with its status.
    for job in range(5):
        assert f"<code>{sweep / str(job)}</code>" in text
    assert "experiment=cnn_vs_mlp model=cnn1d seed=1" in text
    assert "FloatingPointError: &lt;nan&gt; &amp; more" in text  # a reason from a file is escaped, never markup
    assert "mlp: 3 run(s)" in text and "cnn1d: 2 run(s)" in text


def _screenshot(page, out, width=1000, height=1800) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--screenshot={out}",
                             page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.is_file(), result.stderr[-2000:]


def _near(pixels, colour, tolerance=12) -> int:
    return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p[:3], colour)))


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_renders_in_headless_chromium(sweep, tmp_path):
    from PIL import Image

    page = tmp_path / "results.html"
    assert runner(["table", str(sweep), "--html", str(page)]) == 0
    shot = tmp_path / "screenshot.png"
    _screenshot(page, shot)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1800)
    pixels = list(image.getdata())
    # Not blank: mostly white page, with a real share of text, table and figure.
    white = _near(pixels, (255, 255, 255), 3)
    assert 0.5 < white / len(pixels) < 0.97
    # The table header's blue, the PASS badge's green and the FAIL badge's red are drawn (the CSS applied).
    assert _near(pixels, (0x09, 0x69, 0xDA)) > 2000
    assert _near(pixels, (0x1A, 0x7F, 0x37)) > 300 and _near(pixels, (0xCF, 0x22, 0x2E)) > 300
    # The inline figure was decoded and shown: matplotlib's first bar colour covers a real area.
    assert _near(pixels, (0x1F, 0x77, 0xB4), 6) > 5000
    # Its position: below the table, above the claims (the blue of the bars sits in the upper half).
    rows_with_bars = [y for y in range(image.size[1]) if _near(
        [image.getpixel((x, y)) for x in range(0, image.size[0], 4)], (0x1F, 0x77, 0xB4), 6) > 5]
    assert rows_with_bars and 150 < rows_with_bars[0] < rows_with_bars[-1] < 1200
    shutil.copy(shot, tmp_path.parent / "overparam-page-screenshot.png")
