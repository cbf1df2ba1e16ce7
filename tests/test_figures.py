"""Figures: each function writes a readable PNG of a sensible size, with drawn content, and
rejects inputs of the wrong shape."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from rww import figures
from rww.objectives import fc, fcd


def check_png(path, min_width=400, min_height=250):
    from matplotlib.image import imread
    image = imread(path)
    height, width = image.shape[:2]
    assert min_width <= width <= 4000 and min_height <= height <= 4000, (width, height)
    rgb = np.round(image[..., :3].reshape(-1, 3) * 255).astype(np.int64)
    # Not blank: many distinct colours and a good share of non-white pixels.
    assert len(np.unique(rgb @ np.array([65536, 256, 1]))) > 20
    assert (rgb.min(1) < 230).mean() > 0.03
    return width, height


@pytest.fixture
def bold():
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(200, 1, generator=gen, dtype=torch.float64)
    return shared + 0.8 * torch.randn(200, 12, generator=gen, dtype=torch.float64)


def test_fc_comparison(tmp_path, bold):
    emp, sim = fc(bold[:100]), fc(bold[100:])
    path = figures.fc_comparison(emp, sim.numpy(), tmp_path / "sub" / "fc.png", title="t")
    assert path == str(tmp_path / "sub" / "fc.png")
    width, height = check_png(path)
    assert width > 2 * height                                     # three panels side by side
    with pytest.raises(ValueError, match="shapes"):
        figures.fc_comparison(emp, sim[:5, :5], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square matrix"):
        figures.fc_comparison(emp[:3], sim, tmp_path / "x.png")


def test_fc_matrix(tmp_path, bold):
    check_png(figures.fc_matrix(fc(bold), tmp_path / "m.png", labels=[f"r{i}" for i in range(12)]))


def test_fcd_comparison_matrix_and_values(tmp_path, bold):
    a, b = fcd(bold, 30, 5), fcd(bold.flip(0), 30, 5)
    width_two, _ = check_png(figures.fcd_comparison(a, b, tmp_path / "two.png", window=30, step=5, tr=0.72))
    values = a[np.triu_indices(a.shape[0], 1)].numpy()
    width_one, _ = check_png(figures.fcd_comparison(values, b, tmp_path / "one.png",
                                                    exclude_overlapping=False))
    assert width_two > width_one                                  # a 1-d input has no matrix panel
    check_png(figures.fcd_comparison(a, None, tmp_path / "single.png", window=30, step=5,
                                     exclude_overlapping=True))
    with pytest.raises(ValueError, match="needs window and step"):
        figures.fcd_comparison(a, b, tmp_path / "x.png", exclude_overlapping=True)
    with pytest.raises(ValueError, match="FCD matrix"):
        figures.fcd_comparison(torch.zeros(3, 4), None, tmp_path / "x.png")


def test_bold_traces(tmp_path, bold):
    batch = torch.stack([bold, 2 * bold])                        # (B, T, N): first drawn
    check_png(figures.bold_traces(batch, tmp_path / "b.png", tr=0.72, labels=[f"r{i}" for i in range(12)]))
    check_png(figures.bold_traces(bold.numpy(), tmp_path / "c.png", regions=[0, 5]))
    with pytest.raises(ValueError, match=r"indices \[12\] out of range"):
        figures.bold_traces(bold, tmp_path / "x.png", regions=[0, 12])


def test_history(tmp_path):
    history = {
        "epoch": [0, 1, 2, 3, 4], "seconds": [1.0] * 5,
        "loss": [1.2, 0.9, 0.7, 0.65, 0.6], "terms/fc_corr": [0.8, 0.6, 0.5, 0.45, 0.42],
        "terms/prior": [0.4, 0.3, 0.2, 0.2, 0.18], "fc_r": [0.2, 0.4, 0.5, 0.55, None],
        "params/G": [0.5, 0.6, 0.7, 0.75, 0.8],
        "params/w_IE": [[1.0, 1.1, 0.9], [1.05, 1.1, 0.95], [1.1, 1.12, 1.0], [1.1, 1.1, 1.0], [1.1, 1.1, 1.0]],
    }
    width, height = check_png(figures.history(history, tmp_path / "h.png"))
    assert width > height                                         # 4 panels in a 3-column grid
    with pytest.raises(ValueError, match="non-empty dict"):
        figures.history({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no series"):
        figures.history({"epoch": [0, 1]}, tmp_path / "x.png")


def test_figures_leave_pyplot_alone(tmp_path, bold):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures.fc_matrix(fc(bold), tmp_path / "m.png")
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
