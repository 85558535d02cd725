"""Ensemble voting over canonical programs, ties to the surest, invalid code votes for nothing."""

from __future__ import annotations

from robolora.infer import Generation, ensemble, vote

TURN = "robot.turn_left(angle=90.0)"


def test_majority_in_canonical_form():
    # omitted default, int literal, keyword order: the same program as the first two
    same = ["robot.move_forward(distance=2.0, speed=1.0)", "robot.move_forward(distance=2)"]
    same.append("robot.move_forward(speed=1.0, distance=2.0)")
    candidates = [(same[0], -0.5), (TURN, -0.01), (same[1], -0.4), (same[2], -0.3)]
    assert vote(candidates) == 3  # the surest writer of the winning program


def test_tie_goes_to_the_surer_program():
    assert vote([(TURN, -0.3), ("robot.stop()", -0.2)]) == 1
    assert vote([(TURN, -0.1), ("robot.stop()", -0.2)]) == 0


def test_invalid_code_votes_for_nothing():
    bad = '__import__("os").system("echo owned")'
    assert vote([(bad, -0.01), (bad, -0.02), (TURN, -0.9)]) == 2
    assert vote([("robot.fly()", -0.5), (bad, -0.2)]) == 1  # nothing valid: the surest


def test_ensemble_picks_per_command():
    def g(code: str, lp: float) -> Generation:
        return Generation(raw=code, code=code, mean_logprob=lp, finished=True)

    members = [
        [g(TURN, -0.2), g("robot.stop()", -0.1)],
        [g(TURN, -0.3), g("robot.go_home()", -0.05)],
        [g("robot.stop()", -0.1), g("robot.go_home()", -0.2)],
    ]
    assert [p.code for p in ensemble(members)] == [TURN, "robot.go_home()"]
