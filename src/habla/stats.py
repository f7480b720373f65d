"""Paired statistics for comparing two systems on the same test utterances.

In: per-utterance scores of a base and a candidate system (lower is better: MCD, CER, WER;
or higher is better: speaker similarity, MOS estimates).
Out: the mean difference (candidate - base), a seeded paired-bootstrap confidence interval,
and how many utterances got better / worse; likewise the ratio of the two means (how far a
system is from a floor such as the reference recordings' own CER).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _resample(statistic: Callable[[np.ndarray], np.ndarray], n: int, samples: int,
              seed: int) -> np.ndarray:
    """`statistic` of `samples` seeded resamples of n paired utterances: it gets a
    (draws, n) array of indices and returns one value per draw."""
    rng = np.random.default_rng(seed)
    out = np.empty(samples)
    # Chunks bound memory (samples x n indices) for large test sets.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        out[start:stop] = statistic(rng.integers(0, n, size=(stop - start, n)))
    return out


def paired_bootstrap(base: Sequence[float], candidate: Sequence[float], samples: int = 2000,
                     seed: int = 0, confidence: float = 0.95, higher_is_better: bool = False
                     ) -> dict[str, float | int]:
    """Percentile bootstrap CI of mean(candidate - base), resampling utterances in pairs.

    Pairs keep each utterance's difficulty out of the interval: only the per-utterance
    differences are resampled. `better`/`worse` count utterances where the candidate is
    lower/higher (or higher/lower for scores where higher is better: similarity, MOS).
    """
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: need two equal-length lists, got {a.shape} and "
                         f"{b.shape}")
    if a.size == 0:
        raise ValueError("paired_bootstrap: no utterances to compare")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_bootstrap: scores must be finite (NaN or inf found)")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap: samples={samples}, confidence={confidence}")
    diff = b - a
    means = _resample(lambda idx: diff[idx].mean(axis=1), diff.size, samples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "mean": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "samples": samples,
        "n": int(diff.size),
        "better": int(((diff > 0) if higher_is_better else (diff < 0)).sum()),
        "worse": int(((diff < 0) if higher_is_better else (diff > 0)).sum()),
    }


def paired_ratio_bootstrap(base: Sequence[float], candidate: Sequence[float],
                           samples: int = 2000, seed: int = 0, confidence: float = 0.95
                           ) -> dict[str, float | int]:
    """Percentile bootstrap CI of mean(candidate) / mean(base), resampling utterances in
    pairs (the same draws for both), e.g. a model's CER over the reference recordings' CER
    on the same sentences."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_ratio_bootstrap: need two equal-length, non-empty lists, got "
                         f"{a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_ratio_bootstrap: scores must be finite (NaN or inf found)")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"paired_ratio_bootstrap: samples={samples}, confidence={confidence}")
    if a.mean() <= 0:
        raise ValueError("paired_ratio_bootstrap: the denominator's mean is not positive")

    def ratio(idx: np.ndarray) -> np.ndarray:
        den = a[idx].mean(axis=1)
        # a draw whose floor is 0 has no finite ratio: it counts as unboundedly worse
        return np.where(den > 0, b[idx].mean(axis=1) / np.maximum(den, 1e-300), np.inf)

    ratios = _resample(ratio, a.size, samples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return {"ratio": float(b.mean() / a.mean()), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "samples": samples, "n": int(a.size)}


def bootstrap_mean(values: Sequence[float], samples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, float | int]:
    """Percentile bootstrap CI of one system's mean score (e.g. the reference recordings'
    DNSMOS), resampling utterances."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError("bootstrap_mean: need a non-empty list of finite scores")
    means = _resample(lambda idx: x[idx].mean(axis=1), x.size, samples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "samples": samples, "n": int(x.size)}


def mean(values: Sequence[float]) -> float:
    """Mean of finite values (NaN when there are none), as a plain float for JSON."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
