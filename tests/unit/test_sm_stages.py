"""Secrets Manager's staging-label rules as pure functions (stages.attach / stages.move)."""

from __future__ import annotations

from khoa.services.secretsmanager import stages
from tests.support.errors import raised_code


def test_attach_current_moves_previous_to_the_old_current() -> None:
    after = stages.attach({"AWSCURRENT": "v1"}, "v2", ["AWSCURRENT"])
    assert after == {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}
    # the next put moves AWSPREVIOUS off v1 entirely: v1 is deprecated
    after = stages.attach(after, "v3", ["AWSCURRENT"])
    assert after == {"AWSCURRENT": "v3", "AWSPREVIOUS": "v2"}
    assert "v1" not in stages.by_version(after)


def test_attach_custom_labels_move_without_touching_current() -> None:
    after = stages.attach({"AWSCURRENT": "v1", "blue": "v1"}, "v2", ["blue", "green"])
    assert after == {"AWSCURRENT": "v1", "blue": "v2", "green": "v2"}


def test_attach_current_to_the_version_that_has_it_keeps_previous() -> None:
    before = {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}
    assert stages.attach(before, "v2", ["AWSCURRENT"]) == before


def test_label_limit_per_version() -> None:
    labels = [f"L{i}" for i in range(19)]
    after = stages.attach({"AWSCURRENT": "v1"}, "v1", labels)
    assert len(stages.by_version(after)["v1"]) == 20
    assert raised_code(stages.attach, after, "v1", ["one-too-many"]) == "LimitExceededException"
    # other versions are not affected by v1's count
    assert stages.attach(after, "v2", ["other"])["other"] == "v2"


def test_move_current_requires_remove_from_and_sets_previous() -> None:
    before = {"AWSCURRENT": "v1", "AWSPREVIOUS": "v0"}
    assert raised_code(stages.move, before, "AWSCURRENT", None, "v2") == "InvalidParameterException"
    assert raised_code(stages.move, before, "AWSCURRENT", "v0", "v2") == "InvalidParameterException"
    after = stages.move(before, "AWSCURRENT", "v1", "v2")
    assert after == {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}


def test_move_current_back_to_previous_swaps() -> None:
    after = stages.move({"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}, "AWSCURRENT", "v2", "v1")
    assert after == {"AWSCURRENT": "v1", "AWSPREVIOUS": "v2"}


def test_current_can_not_be_removed() -> None:
    assert (
        raised_code(stages.move, {"AWSCURRENT": "v1"}, "AWSCURRENT", "v1", None)
        == "InvalidParameterException"
    )


def test_remove_a_custom_label() -> None:
    assert stages.move({"AWSCURRENT": "v1", "x": "v2"}, "x", "v2", None) == {"AWSCURRENT": "v1"}
    assert raised_code(stages.move, {"x": "v2"}, "x", "v1", None) == "InvalidParameterException"
    assert raised_code(stages.move, {"AWSCURRENT": "v1"}, "x", "v1", None) == "InvalidParameterException"


def test_move_a_custom_label_needs_remove_from_when_attached_elsewhere() -> None:
    assert raised_code(stages.move, {"x": "v1"}, "x", None, "v2") == "InvalidParameterException"
    assert stages.move({"x": "v1"}, "x", "v1", "v2") == {"x": "v2"}
    # attaching an unattached label, or re-attaching where it already is, needs no RemoveFromVersionId
    assert stages.move({}, "x", None, "v2") == {"x": "v2"}
    assert stages.move({"x": "v2"}, "x", None, "v2") == {"x": "v2"}


def test_move_needs_a_version() -> None:
    assert raised_code(stages.move, {"x": "v1"}, "x", None, None) == "InvalidParameterException"


def test_by_version_groups_labels() -> None:
    grouped = stages.by_version({"AWSCURRENT": "v2", "AWSPREVIOUS": "v1", "b": "v2"})
    assert grouped == {"v2": ["AWSCURRENT", "b"], "v1": ["AWSPREVIOUS"]}
