"""Drawing and storing the image batch of a generator version."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch

from app import queries
from app.database import session_scope
from app.models import VersionStatus
from worker.jobs.context import JobContext, job_context
from worker.ml.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes, load_gan
from worker.ml.device import pick_device
from worker.ml.diversity import diversity_score
from worker.ml.experiment import pretrained_checkpoint
from worker.ml.gan import Generator
from worker.ml.realism import realism
from worker.ml.sampling import generate_images, image_to_png

log = logging.getLogger(__name__)

SEEDS_PER_VERSION = 1_000_000
QUALITY_SEEDS = range(2**40, 2**40 + 500)
"""Latents on which every version's realism and diversity are measured: the same for all
versions (so their differences are not sampling noise of the latents), beyond every batch's
seed range, and 500 of them because a served batch can be small."""


def checkpoint_key(version_id: int) -> str:
    return f"versions/{version_id}/gan.pt"


def batch_seeds(version_id: int, count: int) -> list[int]:
    """Every version draws from its own seed range, so batches never share a latent."""
    return [version_id * SEEDS_PER_VERSION + index for index in range(count)]


def image_rows(images: torch.Tensor, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for index, (image, seed) in enumerate(zip(images, seeds, strict=True)):
        png = image_to_png(image)
        rows.append(
            {
                "batch_index": index,
                "latent_seed": seed,
                "png": png,
                "content_hash": hashlib.sha256(png).hexdigest(),
                "width": int(image.shape[-1]),
                "height": int(image.shape[-2]),
            }
        )
    return rows


def draw_batch(generator: Generator, version_id: int, count: int) -> list[dict[str, Any]]:
    device = next(generator.parameters()).device
    seeds = batch_seeds(version_id, count)
    return image_rows(generate_images(generator, seeds, device=device), seeds)


def version_checkpoint(ctx: JobContext, version_id: int) -> dict[str, Any]:
    """The version's generator checkpoint; the first version (v1) starts from the preset's
    pretrained one, which is copied into the artifact store so every worker finds it there."""
    with session_scope(ctx.sessions) as session:
        version = queries.get_version(session, version_id)
        if version is None:
            raise LookupError(f"generator version {version_id} does not exist")
        key, preset = version.checkpoint_key, version.config.get("preset", ctx.settings.preset)
    if key:
        return checkpoint_from_bytes(ctx.artifacts.get(key), kind="gan")
    ckpt, source = pretrained_checkpoint(preset, device=torch.device("cpu"), progress=False)
    key = checkpoint_key(version_id)
    ctx.artifacts.put(key, checkpoint_to_bytes(ckpt))
    with session_scope(ctx.sessions) as session:
        version = queries.get_version(session, version_id)
        assert version is not None
        version.checkpoint_key = key
        version.config = {**version.config, "pretrained_from": source}
    return ckpt


def image_quality(generator: Generator) -> dict[str, float]:
    """A generator's realism (KID against held-out real landscapes, lower is more realistic;
    worker.ml.realism) and diversity (worker.ml.diversity) on the QUALITY_SEEDS images."""
    device = next(generator.parameters()).device
    images = generate_images(generator, QUALITY_SEEDS, device=device)
    kid = realism(images)
    return {
        "realism_kid": kid.value,
        "realism_kid_se": kid.standard_error,
        "diversity": diversity_score(images),
        "images": len(QUALITY_SEEDS),
    }


def generate_batch(version_id: int, promote: bool = False) -> dict[str, Any]:
    """Store the batch of version_id (unless stored already) and mark it ready, or serving when
    promote is set. Images, status and promotion commit together: a version is never served
    with half a batch."""
    ctx = job_context()
    with session_scope(ctx.sessions) as session:
        existing = len(queries.batch_image_ids(session, version_id))
    if existing:
        log.info("version %s already has %d images", version_id, existing)
        return {"version_id": version_id, "images": existing, "created": False}
    _, generator, _ = load_gan(version_checkpoint(ctx, version_id), device=pick_device())
    rows = draw_batch(generator, version_id, ctx.settings.batch_size)
    quality = image_quality(generator)
    with session_scope(ctx.sessions) as session:
        version = queries.get_version(session, version_id)
        assert version is not None
        version.metrics = {**version.metrics, "image_quality": quality}
        queries.add_images(session, version_id, rows)
        version.batch_size = len(rows)
        version.status = VersionStatus.ready
        if promote:
            queries.promote_version(session, version_id)
    log.info("version %s: stored %d images", version_id, len(rows))
    return {"version_id": version_id, "images": len(rows), "created": True}
