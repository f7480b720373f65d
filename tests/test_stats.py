"""Paired bootstrap: seeded, covers the true mean at about the stated rate, counts pairs."""

import math

import numpy as np
import pytest

from habla.stats import mean, paired_bootstrap, paired_ratio_bootstrap


def test_same_seed_gives_the_same_interval_and_another_seed_a_different_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 2, 40), rng.normal(9, 2, 40)
    first = paired_bootstrap(a, b, samples=500, seed=7)
    assert first == paired_bootstrap(a, b, samples=500, seed=7)
    assert first["ci_low"] != paired_bootstrap(a, b, samples=500, seed=8)["ci_low"]


def test_interval_matches_the_normal_approximation_for_many_utterances():
    rng = np.random.default_rng(1)
    base = rng.normal(50, 10, 400)
    cand = base - 3 + rng.normal(0, 4, 400)  # paired: shared difficulty cancels out
    r = paired_bootstrap(base, cand, samples=4000, seed=0)
    d = cand - base
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert r["mean"] == pytest.approx(d.mean())
    assert r["ci_low"] == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert r["ci_high"] == pytest.approx(d.mean() + half, abs=0.25 * half)
    # Unpaired spread (sd 10) would give an interval ~3x wider; pairing must use differences.
    assert r["ci_high"] - r["ci_low"] < 2.6 * half


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        base = rng.normal(20, 5, 30)
        cand = base + 1.0 + rng.normal(0, 2, 30)
        r = paired_bootstrap(base, cand, samples=400, seed=trial)
        hits += r["ci_low"] <= 1.0 <= r["ci_high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_counts_utterances_better_and_worse():
    r = paired_bootstrap([5, 5, 5, 5], [4, 6, 5, 3], samples=200, seed=0)
    assert (r["better"], r["worse"], r["n"]) == (2, 1, 4)
    assert r["mean"] == pytest.approx(-0.5)


def test_identical_differences_give_a_zero_width_interval():
    r = paired_bootstrap([3.0, 4.0, 5.0], [2.0, 3.0, 4.0], samples=300, seed=0)
    assert r["ci_low"] == pytest.approx(-1.0) and r["ci_high"] == pytest.approx(-1.0)


@pytest.mark.parametrize(("a", "b", "message"), [
    ([1.0, 2.0], [1.0], "equal-length"),
    ([], [], "no utterances"),
    ([1.0, float("nan")], [1.0, 2.0], "finite"),
])
def test_bad_input_raises_a_clear_error(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, samples=100)


def test_mean_ignores_missing_scores():
    assert mean([1.0, float("nan"), 3.0]) == 2.0
    assert math.isnan(mean([]))


def test_ratio_interval_covers_the_true_ratio_of_means_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    hits = 0
    for trial in range(200):
        floor = rng.gamma(4.0, 0.05, 30)  # CER-like: positive, skewed, mean 0.2
        system = floor * 1.3 + rng.normal(0, 0.03, 30)  # 1.3x the floor, plus noise
        r = paired_ratio_bootstrap(floor, system, samples=400, seed=trial)
        assert r["ratio"] == pytest.approx(system.mean() / floor.mean())
        hits += r["ci_low"] <= 1.3 <= r["ci_high"]
    assert 0.85 <= hits / 200 <= 0.99


def test_ratio_pairs_utterances_so_shared_difficulty_cancels():
    rng = np.random.default_rng(4)
    floor = rng.gamma(2.0, 0.1, 40)
    r = paired_ratio_bootstrap(floor, 1.2 * floor, samples=500, seed=0)
    # the same draws for both lists: every resample has exactly the ratio 1.2
    assert r["ci_low"] == pytest.approx(1.2) and r["ci_high"] == pytest.approx(1.2)


@pytest.mark.parametrize(("a", "b", "message"), [
    ([0.1, 0.2], [0.1], "equal-length"),
    ([0.0, 0.0], [0.1, 0.2], "not positive"),
    ([0.1, float("inf")], [0.1, 0.2], "finite"),
])
def test_ratio_bad_input_raises_a_clear_error(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_ratio_bootstrap(a, b, samples=100)
