"""Flagging visitors whose behaviour no person produces. Their impressions are marked
`flagged` and then left out of estimator training and of PIR by default (the counts of what
was left out are reported beside every PIR).

Rules, each over one visitor's impressions since `since`:
- clicks everything: at least `min_impressions` background impressions, and a positive
  interaction on at least `click_all_share` of them (people click a few percent at most);
- floods: more than `flood_per_minute` impressions in some minute;
- too fast: at least `fast_count` interactions within `fast_seconds` of their impression
  (a person needs time to see the image and move).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, and_, cast, func, select, update
from sqlalchemy.orm import Session

from app.models import Impression, Interaction


@dataclass(frozen=True)
class AbuseRules:
    min_impressions: int = 20
    click_all_share: float = 0.9
    flood_per_minute: int = 120
    fast_seconds: float = 0.15
    fast_count: int = 5


def _click_all(
    session: Session, rules: AbuseRules, positive_kinds: list[str], since: datetime
) -> set[str]:
    positive = (
        select(Interaction.impression_id)
        .where(Interaction.kind.in_(positive_kinds))
        .group_by(Interaction.impression_id)
        .subquery()
    )
    rows = session.execute(
        select(Impression.visitor_hash)
        .outerjoin(positive, positive.c.impression_id == Impression.id)
        .where(Impression.placement == "background", Impression.created_at >= since)
        .group_by(Impression.visitor_hash)
        .having(func.count() >= rules.min_impressions)
        .having(
            cast(func.count(positive.c.impression_id), Float) / func.count()
            >= rules.click_all_share
        )
    )
    return {visitor for (visitor,) in rows}


def _floods(session: Session, rules: AbuseRules, since: datetime) -> set[str]:
    # Bucket by minute portably: whole minutes since `since`, computed in Python is too slow
    # for big logs, so count per visitor and minute with the database's own date functions.
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        minute = func.strftime("%Y-%m-%d %H:%M", Impression.created_at)
    else:
        minute = func.date_trunc("minute", Impression.created_at)
    per_minute = (
        select(Impression.visitor_hash.label("visitor"), func.count().label("n"))
        .where(Impression.created_at >= since)
        .group_by(Impression.visitor_hash, minute)
        .subquery()
    )
    rows = session.execute(
        select(per_minute.c.visitor).where(per_minute.c.n > rules.flood_per_minute).distinct()
    )
    return {visitor for (visitor,) in rows}


def _too_fast(session: Session, rules: AbuseRules, since: datetime) -> set[str]:
    rows = session.execute(
        select(Impression.visitor_hash, Impression.created_at, Interaction.created_at)
        .join(Interaction, Interaction.impression_id == Impression.id)
        .where(Impression.created_at >= since, Interaction.kind != "dwell")
    )
    fast: dict[str, int] = {}
    for visitor, shown, acted in rows:
        if (acted - shown).total_seconds() < rules.fast_seconds:
            fast[visitor] = fast.get(visitor, 0) + 1
    return {visitor for visitor, count in fast.items() if count >= rules.fast_count}


def flag_implausible_visitors(
    session: Session,
    *,
    positive_kinds: list[str],
    since: datetime,
    rules: AbuseRules | None = None,
) -> dict[str, int]:
    """Flag every impression of the visitors the rules catch; return counts per rule and the
    number of impressions newly flagged."""
    rules = rules or AbuseRules()
    caught = {
        "click_all": _click_all(session, rules, positive_kinds, since),
        "flood": _floods(session, rules, since),
        "too_fast": _too_fast(session, rules, since),
    }
    visitors = set().union(*caught.values())
    flagged = 0
    if visitors:
        result = session.execute(
            update(Impression)
            .where(and_(Impression.visitor_hash.in_(visitors), Impression.flagged.is_(False)))
            .values(flagged=True)
        )
        flagged = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return {
        **{rule: len(v) for rule, v in caught.items()},
        "visitors": len(visitors),
        "impressions_flagged": flagged,
    }
