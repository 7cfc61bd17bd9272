from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app import queries
from app.deps import IdPath, SessionDep, SettingsDep
from app.measurement import Measurement
from app.models import GeneratorVersion, Placement
from app.schemas import ComparisonRead, ImagePir, VersionPir, VersionRead

router = APIRouter(prefix="/v1/versions", tags=["versions"])

PlacementQuery = Annotated[Placement, Query()]
SimulatedQuery = Annotated[
    bool, Query(description="count simulated traffic too (real users only by default)")
]


def _version_or_404(session: SessionDep, version_id: int) -> GeneratorVersion:
    version = queries.get_version(session, version_id)
    if version is None:
        raise HTTPException(
            status_code=404, detail=f"generator version {version_id} does not exist"
        )
    return version


def _read(version: GeneratorVersion) -> VersionRead:
    return VersionRead.model_validate(version)


@router.get("")
def list_versions(session: SessionDep) -> list[VersionRead]:
    return [_read(v) for v in queries.list_versions(session)]


@router.get("/{version_id}")
def get_version(version_id: IdPath, session: SessionDep) -> VersionRead:
    return _read(_version_or_404(session, version_id))


@router.get("/{version_id}/pir")
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


@router.get("/{version_id}/images")
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


@router.get("/{version_id}/comparison")
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
        raise HTTPException(status_code=409, detail=f"version {version_id} has no parent")
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    result = measure.compare_versions(session, version.parent_id, version_id)
    if result is None:
        raise HTTPException(status_code=409, detail="both versions need PIR on at least two images")
    return result
