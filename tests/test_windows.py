"""The one window builder, against plain numpy per window."""

from __future__ import annotations

import numpy as np
import pytest

from traindoc.windows import window_stats


@pytest.mark.parametrize("n,width", [(10, 3), (12, 4), (1, 5), (7, 1)])
def test_window_stats_match_numpy(n, width):
    v = np.random.default_rng(n).normal(1e6, 2.0, n)  # a large offset: variance must not cancel
    v[min(2, n - 1)] = np.nan if n > 3 else v[0]
    last, st = window_stats(v, width)
    for i, end in enumerate(last):
        w = v[i * width:end + 1]
        assert st["count"][i] == len(w)
        if np.isfinite(w).all():
            assert st["mean"][i] == pytest.approx(w.mean(), rel=1e-12)
            assert st["var"][i] == pytest.approx(w.var(), rel=1e-6, abs=1e-9)
            assert (st["min"][i], st["max"][i]) == (w.min(), w.max())
        assert st["nonfinite"][i] == (~np.isfinite(w)).sum()
    assert last[-1] == n - 1 and len(last) == -(-n // width)
