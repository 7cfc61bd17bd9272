"""Flagging visitors whose behaviour no person produces. Their impressions are marked
`flagged` and then left out of estimator training and of PIR by default (the counts of what
was left out are reported beside every PIR).

Rules, each over one visitor's impressions since `since`:
- clicks everything: at least `min_impressions` background impressions, and a positive
  interaction on at least `click_all_share` of them (people click a few percent at most);
- floods: more than `flood_per_minute` impressions in some minute;
- too fast: at least `fast_count` interactions within `fast_seconds` of their impression
  (a person needs time to see the image and move).

The visitor id is the client's to choose, so a bot may send a new one with every impression.
The first and last rules therefore also run per client: the connection's address and user
agent together (`Impression.client_hash`), which the bot cannot rotate as freely. Many people
may share one address (an office, a mobile carrier) and even one user agent, so a client is
judged by shares, never by volume: the click-all share over all its impressions, and fast
interactions only when they are at least `fast_share` of its interactions. No flood rule runs
per client; the per-address rate limit is the answer to volume from one address.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, cast, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.models import Impression, Interaction


@dataclass(frozen=True)
class AbuseRules:
    min_impressions: int = 20
    click_all_share: float = 0.9
    flood_per_minute: int = 120
    fast_seconds: float = 0.15
    fast_count: int = 5
    # Per client (address and user agent): the share of its interactions that must be too
    # fast, so that the rare quick click of each of many people behind it never adds up.
    fast_share: float = 0.5


def _click_all(
    session: Session,
    rules: AbuseRules,
    positive_kinds: list[str],
    since: datetime,
    key: InstrumentedAttribute[Any],
) -> set[str]:
    """The keys (visitor or client hashes) with a positive interaction on nearly every one of
    at least min_impressions background impressions."""
    positive = (
        select(Interaction.impression_id)
        .where(Interaction.kind.in_(positive_kinds))
        .group_by(Interaction.impression_id)
        .subquery()
    )
    rows = session.execute(
        select(key)
        .outerjoin(positive, positive.c.impression_id == Impression.id)
        .where(
            Impression.placement == "background",
            Impression.created_at >= since,
            key.is_not(None),
        )
        .group_by(key)
        .having(func.count() >= rules.min_impressions)
        .having(
            cast(func.count(positive.c.impression_id), Float) / func.count()
            >= rules.click_all_share
        )
    )
    return {value for (value,) in rows}


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


def _too_fast(session: Session, rules: AbuseRules, since: datetime) -> tuple[set[str], set[str]]:
    """(visitors, clients) with at least fast_count interactions within fast_seconds of
    their impression; a client also needs fast_share of its interactions to be that fast."""
    rows = session.execute(
        select(
            Impression.visitor_hash,
            Impression.client_hash,
            Impression.created_at,
            Interaction.created_at,
        )
        .join(Interaction, Interaction.impression_id == Impression.id)
        .where(Impression.created_at >= since, Interaction.kind != "dwell")
    )
    fast_visitors: Counter[str] = Counter()
    fast_clients: Counter[str] = Counter()
    client_interactions: Counter[str] = Counter()
    for visitor, client, shown, acted in rows:
        fast = (acted - shown).total_seconds() < rules.fast_seconds
        if fast:
            fast_visitors[visitor] += 1
        if client is not None:
            client_interactions[client] += 1
            if fast:
                fast_clients[client] += 1
    visitors = {visitor for visitor, count in fast_visitors.items() if count >= rules.fast_count}
    clients = {
        client
        for client, count in fast_clients.items()
        if count >= rules.fast_count and count >= rules.fast_share * client_interactions[client]
    }
    return visitors, clients


def flag_implausible_visitors(
    session: Session,
    *,
    positive_kinds: list[str],
    since: datetime,
    rules: AbuseRules | None = None,
) -> dict[str, int]:
    """Flag every impression of the visitors the rules catch, and the impressions since
    `since` of the clients (address and user agent) they catch; return counts per rule and
    the number of impressions newly flagged."""
    rules = rules or AbuseRules()
    fast_visitors, fast_clients = _too_fast(session, rules, since)
    caught = {
        "click_all": _click_all(session, rules, positive_kinds, since, Impression.visitor_hash),
        "flood": _floods(session, rules, since),
        "too_fast": fast_visitors,
    }
    caught_clients = {
        "click_all_client": _click_all(
            session, rules, positive_kinds, since, Impression.client_hash
        ),
        "too_fast_client": fast_clients,
    }
    visitors = set().union(*caught.values())
    clients = set().union(*caught_clients.values())
    flagged = 0
    if visitors:
        result = session.execute(
            update(Impression)
            .where(and_(Impression.visitor_hash.in_(visitors), Impression.flagged.is_(False)))
            .values(flagged=True)
        )
        flagged += int(result.rowcount or 0)  # type: ignore[attr-defined]
    if clients:
        result = session.execute(
            update(Impression)
            .where(
                Impression.client_hash.in_(clients),
                Impression.created_at >= since,
                Impression.flagged.is_(False),
            )
            .values(flagged=True)
        )
        flagged += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return {
        **{rule: len(v) for rule, v in caught.items()},
        **{rule: len(v) for rule, v in caught_clients.items()},
        "visitors": len(visitors),
        "clients": len(clients),
        "impressions_flagged": flagged,
    }
