"""Recording interactions: the checks each one gets, shared by POST /v1/interactions (and its
/beacon twin), which records one, and POST /v1/interactions/batch, which records many.

Every interaction is checked the same way wherever it comes from: its body (kind and value),
its token's signature and expiry, then, inside the group commit (app/ingest.py), that the
impression is stored here and that a rating is for a rating-placement impression. A refusal
carries the HTTP status the single endpoint answers for it; a batch reports it in the item's
result instead, and stores the other items all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from app.errors import PirloopError, describe_errors
from app.ingest import (
    Ingest,
    NewInteraction,
    RatingNotAllowed,
    StoredInteraction,
    UnknownImpression,
)
from app.schemas import InteractionCreate
from app.tokens import TokenError, verify_impression
from app.writer import WriteUnavailable

log = logging.getLogger(__name__)

# The checks' refusals; each carries the status the single endpoint answers with.
_REFUSALS = (TokenError, UnknownImpression, RatingNotAllowed)


class InteractionRefused(PirloopError):
    """An interaction that is not stored: `status_code` is the HTTP status the single
    endpoint answers for it, `message` says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status_code=status)

    @property
    def status(self) -> int:
        return self.status_code


def refusal(exc: Exception) -> InteractionRefused:
    """The refusal of an item whose check or write failed with `exc`."""
    if isinstance(exc, InteractionRefused):
        return exc
    if isinstance(exc, _REFUSALS):
        return InteractionRefused(exc.status_code, str(exc))
    if isinstance(exc, WriteUnavailable):
        return InteractionRefused(
            503, "not stored: the database was unavailable; send this interaction again"
        )
    log.error("an interaction could not be stored", exc_info=exc)
    return InteractionRefused(500, "this interaction could not be stored")


def verified(secret: str, body: InteractionCreate) -> NewInteraction:
    """The write for a checked body, once its token is verified; raises TokenError."""
    claims = verify_impression(secret, body.token)
    assert body.value is not None  # the schema fills a default for every kind
    return NewInteraction(
        impression_id=claims.impression_id,
        image_id=claims.image_id,
        kind=body.kind,
        value=body.value,
    )


def checked_item(secret: str, index: int, raw: object) -> NewInteraction | InteractionRefused:
    """One item of a batch, checked as the single endpoint checks its body and token."""
    try:
        return verified(secret, InteractionCreate.model_validate(raw))
    except ValidationError as exc:
        errors = [
            {**err, "loc": ("interactions", index, *err["loc"])}
            for err in exc.errors(include_url=False)
        ]
        return InteractionRefused(422, describe_errors(errors))
    except TokenError as exc:
        return refusal(exc)


async def record_one(body: InteractionCreate, *, secret: str, ingest: Ingest) -> StoredInteraction:
    """Stored (or found stored before) once committed; raises InteractionRefused, or
    WriteUnavailable when the transaction did not commit."""
    try:
        return await ingest.record_interaction(verified(secret, body))
    except _REFUSALS as exc:
        raise refusal(exc) from exc


async def record_many(
    raw_items: Sequence[object], *, secret: str, ingest: Ingest
) -> list[StoredInteraction | InteractionRefused]:
    """One outcome per item, in order, once the transaction holding the good items has
    committed: they go to the writer as one submission. Raises WriteUnavailable when none of
    the good items could be stored because the database was unavailable (nothing of the
    batch is stored then, and all of it may be sent again)."""
    checked = [checked_item(secret, index, raw) for index, raw in enumerate(raw_items)]
    writes = [item for item in checked if isinstance(item, NewInteraction)]
    written = await ingest.record_interactions(writes)
    if written and all(isinstance(outcome, WriteUnavailable) for outcome in written):
        raise next(outcome for outcome in written if isinstance(outcome, WriteUnavailable))
    outcomes = iter(written)
    results: list[StoredInteraction | InteractionRefused] = []
    for item in checked:
        if isinstance(item, InteractionRefused):
            results.append(item)
            continue
        outcome = next(outcomes)
        results.append(outcome if isinstance(outcome, StoredInteraction) else refusal(outcome))
    return results
