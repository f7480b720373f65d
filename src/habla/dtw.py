"""Dynamic time warping: the minimum-cost monotonic path through a local-cost matrix.

In: an (N, M) cost matrix (e.g. frame distances between two mel spectrograms). Out: the
path's row and column indices and its total cost. Used by MCD and by alignment by synthesis.
"""

from __future__ import annotations

import numpy as np


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimum-cost monotonic alignment of a (N, M) local-cost matrix.

    Returns (i indices, j indices, total cost). Row by row: the diagonal and vertical steps
    are one vectorised minimum; the horizontal step D[i,j] = min(t[j], D[i,j-1] + c[i,j]) is
    a running minimum of (t - S) plus S, with S the row's prefix sums of cost.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError("dtw_path: empty sequence")
    cost = np.asarray(cost, dtype=np.float64)
    acc = np.empty((n + 1, m + 1))
    acc[0, :] = np.inf
    acc[:, 0] = np.inf
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row = cost[i - 1]
        t = row + np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])
        prefix = np.cumsum(row)
        acc[i, 1:] = prefix + np.minimum.accumulate(t - prefix)
    # Backtrack; ties go to the diagonal step (the shortest path among equals).
    i, j = n, m
    path_i, path_j = [i - 1], [j - 1]
    while i > 1 or j > 1:
        diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
        path_i.append(i - 1)
        path_j.append(j - 1)
    return np.array(path_i[::-1]), np.array(path_j[::-1]), float(acc[n, m])
