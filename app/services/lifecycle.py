"""The referral lifecycle: one explicit table of allowed transitions."""

from app.core.errors import InvalidTransition
from app.models.enums import ReferralStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.RECEIVED: frozenset(
        {S.ACCEPTED, S.DECLINED, S.FORWARDED, S.RETURNED, S.CANCELLED, S.NO_CONTACT}
    ),
    S.ACCEPTED: frozenset({S.COMPLETED, S.RETURNED, S.CANCELLED, S.NO_CONTACT, S.FORWARDED}),
    S.DECLINED: frozenset(),
    S.FORWARDED: frozenset(),
    S.RETURNED: frozenset(),
    S.CANCELLED: frozenset(),
    S.NO_CONTACT: frozenset(),
    S.COMPLETED: frozenset(),
}

OPEN = frozenset({S.RECEIVED, S.ACCEPTED})


def check_transition(current: S, target: S) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(
            f"The referral is {current}; it cannot become {target}.",
        )
