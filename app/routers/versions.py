from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app import queries
from app.deps import IdPath, SessionDep, SettingsDep
from app.errors import INVALID, UNAVAILABLE, Conflict, NotFound, conflict, not_found, responses
from app.measurement import Measurement
from app.models import GeneratorVersion, Placement
from app.schemas import ComparisonRead, ImagePir, VersionPir, VersionRead

router = APIRouter(prefix="/v1/versions", tags=["versions"], responses=UNAVAILABLE)
ONE_VERSION = responses(not_found("generator version"), INVALID)
# Reading a version by the id another answer gave: what stateful clients (and fuzzers) chain.
VERSION_LINKS = {
    operation: {"operationId": operation, "parameters": {"version_id": "$response.body#/0/id"}}
    for operation in ("get_version", "version_pir", "version_images_pir", "version_comparison")
}

PlacementQuery = Annotated[Placement, Query()]
SimulatedQuery = Annotated[
    bool, Query(description="count simulated traffic too (real users only by default)")
]


def _version_or_404(session: SessionDep, version_id: int) -> GeneratorVersion:
    version = queries.get_version(session, version_id)
    if version is None:
        raise NotFound(f"generator version {version_id} does not exist")
    return version


def _read(version: GeneratorVersion) -> VersionRead:
    return VersionRead.model_validate(version)


@router.get("", responses={200: {"links": VERSION_LINKS}})
def list_versions(session: SessionDep) -> list[VersionRead]:
    return [_read(v) for v in queries.list_versions(session)]


@router.get("/{version_id}", responses=ONE_VERSION)
def get_version(version_id: IdPath, session: SessionDep) -> VersionRead:
    return _read(_version_or_404(session, version_id))


@router.get("/{version_id}/pir", responses=ONE_VERSION)
def version_pir(
    version_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    placement: PlacementQuery = Placement.background,
    include_simulated: SimulatedQuery = False,
) -> VersionPir:
    """Mean per-image PIR of a version with its 95% interval."""
    _version_or_404(session, version_id)
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    return measure.summarize_version(session, version_id)


@router.get("/{version_id}/images", responses=ONE_VERSION)
def version_images_pir(
    version_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    placement: PlacementQuery = Placement.background,
    include_simulated: SimulatedQuery = False,
) -> list[ImagePir]:
    """Per-image impressions, positives and PIR for every image of the batch."""
    _version_or_404(session, version_id)
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    return measure.images_pir(measure.counts(session, version_id))


@router.get(
    "/{version_id}/comparison",
    responses=responses(
        ONE_VERSION, conflict("the version has no parent, or too little PIR to compare")
    ),
)
def version_comparison(
    version_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    placement: PlacementQuery = Placement.background,
    include_simulated: SimulatedQuery = False,
) -> ComparisonRead:
    """This version against its parent over all their traffic: change in PIR, Cohen's d,
    Welch's p-value. A before/after report, confounded with time when the two were served
    one after the other; /v1/rollouts has the concurrent comparison and the decision."""
    version = _version_or_404(session, version_id)
    if version.parent_id is None:
        raise Conflict(f"version {version_id} has no parent")
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    result = measure.compare_versions(session, version.parent_id, version_id)
    if result is None:
        raise Conflict("both versions need PIR on at least two images")
    return result
