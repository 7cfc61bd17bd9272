"""Rollouts: the running comparison of a candidate with the champion, and the decisions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app import dashboard, rollout
from app.deps import IdPath, SessionDep
from app.errors import INVALID, UNAVAILABLE, NotFound, not_found, responses
from app.schemas import RolloutDetail, RolloutRead

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"], responses=UNAVAILABLE)
NOT_FOUND = not_found("rollout")
ROLLOUT_LINKS = {
    "get_rollout": {
        "operationId": "get_rollout",
        "parameters": {"rollout_id": "$response.body#/0/id"},
    }
}


class NoRollout(NotFound):
    pass


@router.get("", responses=responses(INVALID, {200: {"links": ROLLOUT_LINKS}}))
def list_rollouts(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[RolloutRead]:
    """Every rollout, newest first: the decision history with its evidence."""
    return [dashboard.rollout_read(r) for r in rollout.list_rollouts(session, limit=limit)]


@router.get("/current", responses=NOT_FOUND)
def current_rollout(session: SessionDep) -> RolloutDetail:
    """The running comparison with every look so far (404 when no candidate is evaluated)."""
    running = rollout.running_rollout(session)
    if running is None:
        raise NoRollout("no rollout is running")
    return dashboard.rollout_detail(session, running)


@router.get("/{rollout_id}", responses=responses(NOT_FOUND, INVALID))
def get_rollout(rollout_id: IdPath, session: SessionDep) -> RolloutDetail:
    """One rollout with every look at it and the decision."""
    row = rollout.get_rollout(session, rollout_id)
    if row is None:
        raise NoRollout(f"rollout {rollout_id} does not exist")
    return dashboard.rollout_detail(session, row)
