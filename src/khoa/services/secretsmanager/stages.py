"""The staging-label rules, as pure functions over a ``{label: version_id}`` map.

AWS moves labels, it never copies them: a label is on at most one version. When AWSCURRENT moves to a
new version, the version it leaves gets AWSPREVIOUS (which leaves whichever version had it). A
version with no label is deprecated and may be removed once more than 100 versions exist.
"""

from __future__ import annotations

from collections import Counter

from khoa.services.secretsmanager import errors

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
PENDING = "AWSPENDING"
MAX_LABELS_PER_VERSION = 20
MAX_VERSIONS = 100


def attach(stages: dict[str, str], version_id: str, labels: list[str]) -> dict[str, str]:
    """Attach ``labels`` to ``version_id`` (a value just put: PutSecretValue, UpdateSecret), moving them
    from wherever they were.

    When AWSCURRENT leaves a version that also carries AWSPENDING, that version keeps only AWSPREVIOUS:
    AWSPENDING is removed, not left behind (AWS's recorded answers, LocalStack's
    test_update_secret_version_stages_current_pending). UpdateSecretVersionStage (:func:`move`) does not
    do this: moving AWSCURRENT there leaves AWSPENDING where it is, as AWS does."""
    result = dict(stages)
    for label in labels:
        holder = result.get(label)
        if label == CURRENT and holder is not None and holder != version_id:
            result[PREVIOUS] = holder
            if result.get(PENDING) == holder and PENDING not in labels:
                del result[PENDING]
        result[label] = version_id
    check_label_limit(result)
    return result


def move(stages: dict[str, str], label: str, remove_from: str | None, move_to: str | None) -> dict[str, str]:
    """UpdateSecretVersionStage's rules."""
    result = dict(stages)
    holder = result.get(label)
    if move_to is not None:
        if holder is not None and holder != move_to and remove_from != holder:
            raise errors.invalid_parameter(
                f"The parameter RemoveFromVersionId can't be empty. Staging label {label} is currently "
                f"attached to version {holder}, so you must explicitly reference that version in "
                "RemoveFromVersionId."
            )
        if remove_from is not None and holder != remove_from:
            raise errors.invalid_parameter(f"Staging label {label} is not attached to version {remove_from}.")
        if label == CURRENT and holder is not None and holder != move_to:
            result[PREVIOUS] = holder
        result[label] = move_to
    elif remove_from is not None:
        if holder != remove_from:
            raise errors.invalid_parameter(f"Staging label {label} is not attached to version {remove_from}.")
        if label == CURRENT:
            raise errors.invalid_parameter(
                "You can only move staging label AWSCURRENT to a different secret "
                "version. It can't be completely removed."
            )
        del result[label]
    else:
        raise errors.invalid_parameter("You must specify RemoveFromVersionId, MoveToVersionId, or both.")
    check_label_limit(result)
    return result


def check_label_limit(stages: dict[str, str]) -> None:
    counts = Counter(stages.values())
    if counts and max(counts.values()) > MAX_LABELS_PER_VERSION:
        raise errors.limit_exceeded(
            f"A secret version can have at most {MAX_LABELS_PER_VERSION} staging labels."
        )


def by_version(stages: dict[str, str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for label, version_id in sorted(stages.items()):
        result.setdefault(version_id, []).append(label)
    return result
