from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app import aggregates, queries
from app.deps import IdPath, SessionDep, SettingsDep
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
    return aggregates.summarize_version(
        session, settings, version_id, placement=placement, include_simulated=include_simulated
    )


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
    counts = aggregates.version_image_counts(
        session, settings, version_id, placement=placement, include_simulated=include_simulated
    )
    return aggregates.images_pir(counts, placement)


@router.get("/{version_id}/comparison")
def version_comparison(
    version_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    placement: PlacementQuery = Placement.background,
    include_simulated: SimulatedQuery = False,
) -> ComparisonRead:
    """This version against its parent: change in PIR, Cohen's d, Welch's p-value."""
    version = _version_or_404(session, version_id)
    if version.parent_id is None:
        raise HTTPException(status_code=409, detail=f"version {version_id} has no parent")
    result = aggregates.compare_versions(
        session,
        settings,
        version.parent_id,
        version_id,
        placement=placement,
        include_simulated=include_simulated,
    )
    if result is None:
        raise HTTPException(status_code=409, detail="both versions need PIR on at least two images")
    return result
