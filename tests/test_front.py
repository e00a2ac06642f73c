import pytest

from autocompress.search.front import (
    TrialRecord,
    hypervolume,
    hypervolume_history,
    pareto_numbers,
    per_target_fronts,
    running_hypervolume,
    trials_to_reach,
)
from autocompress.search.job import Objective


def test_hypervolume_of_a_hand_worked_2d_front():
    # Points (1,3), (2,2), (3,1) against (4,4): a staircase of 3 + 2 + 1 = 6 unit squares.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3]], [4, 4]) == pytest.approx(6.0)  # a dominated point adds 0
    assert hypervolume([[5, 1]], [4, 4]) == 0.0  # beyond the reference


def test_hypervolume_3d_of_two_boxes():
    # Box A [1,4]x[1,4]x[3,4] = 9*1 = 9; box B [2,4]x[2,4]x[1,4] = 4*3 = 12; overlap [2,4]^2x[3,4] = 4.
    assert hypervolume([[1, 1, 3], [2, 2, 1]], [4, 4, 4]) == pytest.approx(9 + 12 - 4)


def record(n, kl, rpi, m2, feasible=True):
    return TrialRecord(
        number=n,
        state="COMPLETE",
        feasible=feasible,
        recipe={},
        run_id=None,
        metrics={"kl": kl, "rpi.decode_ms_per_token": rpi, "m2.decode_ms_per_token": m2},
    )


def test_fronts_per_target_from_one_set_of_trials():
    records = [record(0, 0.1, 30, 5), record(1, 0.2, 20, 6), record(2, 0.3, 25, 3), record(3, 0.05, 10, 2, False)]
    objectives = [Objective(metric="kl"), Objective(metric="rpi.decode_ms_per_token")]
    fronts = per_target_fronts(records, objectives, ["rpi", "m2"])
    assert fronts == {"rpi": {0, 1}, "m2": {0, 2}}  # trial 1 is dominated on m2, trial 2 on rpi
    assert 3 not in set().union(*fronts.values())  # infeasible trials are never on a front
    assert pareto_numbers(records, objectives) == fronts["rpi"]


def test_hypervolume_history_never_decreases():
    records = [record(0, 0.3, 30, 5), record(1, 0.2, 20, 6), record(2, 0.5, 40, 3), record(3, 0.1, 10, 2)]
    history = hypervolume_history(records, [Objective(metric="kl"), Objective(metric="rpi.decode_ms_per_token")])
    assert len(history) == 4 and history[0] > 0
    assert all(b >= a - 1e-12 for a, b in zip(history, history[1:]))
    assert history[2] == pytest.approx(history[1])  # trial 2 is dominated: no gain
    assert history[3] > history[1] * 1.1


def test_running_hypervolume_uses_the_fixed_reference_and_skips_infeasible_trials():
    objectives = [Objective(metric="kl"), Objective(metric="rpi.decode_ms_per_token")]
    records = [
        record(0, 0.5, 30, 0),
        record(1, 0.1, 10, 0, feasible=False),
        record(2, 0.2, 20, 0),
        record(3, 2.0, 5, 0),
    ]  # trial 3 lies beyond the reference's KL
    history = running_hypervolume(records, objectives, [1.0, 40.0])
    # (1-0.5)*(40-30) = 5; adding (0.2, 20): 0.8*20 = 16 covers it -> 16; trial 3 adds nothing.
    assert history == pytest.approx([5.0, 5.0, 16.0, 16.0])


def test_running_hypervolume_flips_maximised_objectives():
    objectives = [Objective(metric="kl", direction="maximize"), Objective(metric="rpi.decode_ms_per_token")]
    history = running_hypervolume([record(0, 0.5, 30, 0)], objectives, [0.0, 40.0])
    assert history == pytest.approx([0.5 * 10])


def test_trials_to_reach_counts_trials_and_says_none_when_never_reached():
    history = [0.0, 0.2, 0.2, 0.9, 1.0]
    assert trials_to_reach(history, 0.95) == 5
    assert trials_to_reach(history, 0.2) == 2
    assert trials_to_reach(history, 1.01) is None
