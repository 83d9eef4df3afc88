import numpy as np
import pytest

from promptevo.errors import UserError
from promptevo.optimise.bandit import (
    UCB1,
    ArmStats,
    EpsilonGreedy,
    Greedy,
    RandomSelector,
    RoundRobin,
    best,
    make_selector,
    weakest,
)
from promptevo.stats import mean_ci, paired_ci, t_critical


def arms(*rewards):
    return [ArmStats(arm=i + 1, rewards=list(r)) for i, r in enumerate(rewards)]


rng = lambda: np.random.default_rng(0)  # noqa: E731


def test_every_selector_tries_unpulled_arms_first():
    population = arms([1.0], [], [0.5], [])
    for sel in (UCB1(), Greedy(), RoundRobin()):
        assert sel.select(population, 2, rng()) == [2, 4], sel.name


def test_ucb_prefers_less_pulled_arm_at_equal_mean():
    population = arms([0.5] * 10, [0.5])
    assert UCB1(c=1.0).select(population, 1, rng()) == [2]
    # with no exploration it is greedy
    assert UCB1(c=0.0).select(arms([0.1] * 10, [0.0]), 1, rng()) == [1]


def test_greedy_picks_highest_means():
    assert Greedy().select(arms([0.1], [0.9], [0.5]), 2, rng()) == [2, 3]


def test_epsilon_greedy_extremes():
    population = arms([0.1], [0.9], [0.5])
    assert EpsilonGreedy(epsilon=0.0).select(population, 1, rng()) == [2]
    picks = {EpsilonGreedy(epsilon=1.0).select(population, 1, np.random.default_rng(s))[0] for s in range(40)}
    assert picks == {1, 2, 3}


def test_random_selector_picks_distinct_arms():
    for s in range(20):
        chosen = RandomSelector().select(arms([1], [2], [3], [4]), 3, np.random.default_rng(s))
        assert len(set(chosen)) == 3


def test_round_robin_cycles_by_pulls():
    assert RoundRobin().select(arms([1, 1], [1], [1, 1, 1]), 2, rng()) == [2, 1]


def test_weakest_and_best_ignore_unpulled():
    population = arms([0.2], [], [-0.3, 0.1])
    assert weakest(population) == 3 and best(population) == 1
    assert weakest(arms([])) is None


def test_unknown_selector_is_a_user_error():
    with pytest.raises(UserError):
        make_selector("thompson")


def test_confidence_intervals():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.mean == 2.5
    assert ci.low == pytest.approx(2.5 - 3.182 * (1.6666667 / 4) ** 0.5, rel=1e-4)
    assert paired_ci([2, 3, 4], [1, 2, 3]).mean == 1 and paired_ci([2, 3, 4], [1, 2, 3]).excludes_zero()
    assert t_critical(22) > t_critical(25) > t_critical(30) > 1.96
