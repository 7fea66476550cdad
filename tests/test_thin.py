"""What reaches the browser: smoothing before thinning, spikes kept, ends kept."""

from __future__ import annotations

import numpy as np
import pytest

from traindoc.app.thin import ema, minmax_indices, thin


def test_thin_keeps_spikes_and_ends():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 1_000_000)
    y[123_457] = 50.0
    y[876_543] = -60.0
    x = np.arange(len(y))
    tx, ty = thin(x, y, 4000)
    assert len(tx) <= 4000
    assert tx[0] == 0 and tx[-1] == len(y) - 1
    assert 50.0 in ty and -60.0 in ty
    assert np.all(np.diff(tx) > 0)


def test_thin_keeps_nonfinite_points_visible():
    y = np.ones(100_000)
    y[70_000:] = np.nan
    idx = minmax_indices(y, 1000)
    assert np.isnan(y[idx]).any()


def test_short_series_untouched():
    assert list(minmax_indices(np.arange(10.0), 4000)) == list(range(10))


def test_ema_debiased_and_matches_recursion():
    x = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    w = 0.5
    out = ema(x, w)
    assert out[0] == 1.0  # debiased: no pull towards zero at the start
    acc = norm = 0.0
    expected = []
    for v in x:
        if np.isfinite(v):
            acc, norm = w * acc + (1 - w) * v, w * norm + (1 - w)
        expected.append(acc / norm)
    assert out == pytest.approx(expected)
    assert list(ema(x, 0.0)[:3]) == [1.0, 2.0, 3.0]
