"""Checkpoints as plain dicts: to and from files or bytes, always loaded with weights_only=True.

A checkpoint holds a format version, its kind ("gan", "estimator", ...), the config as a plain
dict, the step, model and optimiser states and the fingerprint of the data it was trained on.
The service stores checkpoints as bytes in its artifact store, so bytes are first-class here.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from worker.ml.gan import Discriminator, GanConfig, Generator

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "kind", "config", "step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not what the caller expected."""


def checkpoint_to_bytes(ckpt: dict[str, Any]) -> bytes:
    _validate(ckpt, source="checkpoint to save")
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(data: bytes, *, kind: str | None = None) -> dict[str, Any]:
    return _load(io.BytesIO(data), source=f"checkpoint bytes ({len(data)} bytes)", kind=kind)


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = checkpoint_to_bytes(ckpt)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("saved %s checkpoint to %s", ckpt["kind"], target)
    return target


def load_checkpoint(path: str | Path, *, kind: str | None = None) -> dict[str, Any]:
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint file {source} does not exist")
    with source.open("rb") as handle:
        return _load(io.BytesIO(handle.read()), source=str(source), kind=kind)


def _load(buffer: io.BytesIO, *, source: str, kind: str | None) -> dict[str, Any]:
    try:
        ckpt = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad archives
        raise CheckpointError(f"{source} is not a readable checkpoint: {exc}") from exc
    _validate(ckpt, source=source)
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{source} is a {ckpt['kind']!r} checkpoint, expected {kind!r}")
    return ckpt


def _validate(ckpt: object, *, source: str) -> None:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{source} holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{source} lacks checkpoint keys {missing}")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format_version {ckpt['format_version']!r}; this code reads "
            f"{FORMAT_VERSION}"
        )


def gan_checkpoint(
    cfg: GanConfig,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer | None,
    opt_d: torch.optim.Optimizer | None,
    step: int,
    fingerprint: str,
    *,
    rng_state: torch.Tensor | None = None,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A "gan" checkpoint; rng_state (the pretraining batch/latent generator) makes resume exact."""
    ckpt: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "gan",
        "config": cfg.to_dict(),
        "step": step,
        "generator": _cpu_state(generator),
        "discriminator": _cpu_state(discriminator),
        "fingerprint": fingerprint,
        "metrics": dict(metrics or {}),
    }
    if opt_g is not None and opt_d is not None:
        ckpt["opt_g"] = opt_g.state_dict()
        ckpt["opt_d"] = opt_d.state_dict()
    if rng_state is not None:
        ckpt["rng_state"] = rng_state
    return ckpt


def load_gan(
    ckpt: dict[str, Any], *, device: torch.device
) -> tuple[GanConfig, Generator, Discriminator]:
    if ckpt.get("kind") != "gan":
        raise CheckpointError(f"expected a 'gan' checkpoint, got {ckpt.get('kind')!r}")
    try:
        cfg = GanConfig.from_dict(dict(ckpt["config"]))
        generator = Generator(cfg)
        discriminator = Discriminator(cfg)
        generator.load_state_dict(ckpt["generator"])
        discriminator.load_state_dict(ckpt["discriminator"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"gan checkpoint does not match the models: {exc}") from exc
    return cfg, generator.to(device), discriminator.to(device)


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}
