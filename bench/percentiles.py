"""The one percentile definition every bench reports with, so a p99 means the same everywhere.

Linear interpolation between closest ranks: numpy's default (``method="linear"``),
``statistics.quantiles(method="inclusive")``, R's type 7, a spreadsheet's PERCENTILE.INC.
With the n values sorted as x[0] <= ... <= x[n-1], the q-th percentile sits at position
h = (n - 1) * q / 100 and is x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h]).

Why this one: it is continuous in the data (a p99 moves by at most the gap between two
neighbouring samples when one sample changes), its p50 is ``statistics.median`` (which the
benches also use), p0 and p100 are the minimum and maximum, and readers can reproduce it
with numpy. Latency percentiles that another tool computes (fortio's histogram in
``bench/mesh_latency.py``) are that tool's own and are reported as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of ``values``, interpolated as above.

    One sample is every percentile of itself. No samples, or a NaN among them (a
    measurement that failed), raise ``ValueError``: a bench must not print a figure it did
    not measure.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        raise ValueError(f"p{q:g} of no samples: the bench measured nothing")
    failed = sum(math.isnan(value) for value in ordered)
    if failed:
        raise ValueError(
            f"p{q:g}: {failed} of {len(ordered)} samples are NaN (failed measurements)"
        )
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    if below == len(ordered) - 1:
        return ordered[below]
    return ordered[below] + (position - below) * (ordered[below + 1] - ordered[below])
