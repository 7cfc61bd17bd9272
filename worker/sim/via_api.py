"""The closed-loop experiment through the service: simulated users drive the real API, the
service's own loop (embedded jobs or Celery workers) estimates and tunes, and the change is
measured from the logged data only, next to the true objective's numbers.

The service must count simulated traffic (PIRLOOP_USE_SIMULATED_TRAFFIC=true) and start a
cycle when each image has the experiment's impressions (PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from app.stats import compare
from worker.ml.diversity import diversity_score
from worker.ml.sampling import png_to_image, save_grid
from worker.sim.objectives import load_objective
from worker.sim.users import SimulationPlan, parse_populations, run_simulation

log = logging.getLogger(__name__)


@dataclass
class ViaApiPlan:
    url: str
    objective: str
    impressions_per_image: int
    rounds: int = 1
    users: int = 8
    rate: float = 0.0
    placement: str = "background"
    cycle_timeout: float = 1800.0
    seed: int = 0
    json_path: str | None = None
    grid_path: str | None = None
    progress: bool = True


class ServiceClient:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def versions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get("/v1/versions").raise_for_status().json()
        return result

    def serving(self) -> dict[str, Any]:
        for version in self.versions():
            if version["status"] == "serving":
                return version
        raise RuntimeError("the service is serving no generator version")

    def per_image(self, version_id: int, placement: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (
            self.http.get(
                f"/v1/versions/{version_id}/images",
                params={"placement": placement, "include_simulated": "true"},
            )
            .raise_for_status()
            .json()
        )
        return result

    def images(self, version_id: int, placement: str) -> torch.Tensor:
        rows = self.per_image(version_id, placement)
        pngs = [
            self.http.get(f"/v1/images/{r['image_id']}").raise_for_status().content for r in rows
        ]
        return torch.stack([png_to_image(p) for p in pngs])

    def wait_for_child(self, parent_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.serving()
            if current["id"] != parent_id and current["parent_id"] == parent_id:
                return current
            time.sleep(2)
        raise TimeoutError(f"no new version replaced version {parent_id} within {timeout:.0f}s")


def drive(client: ServiceClient, plan: ViaApiPlan, version: dict[str, Any], round_: int) -> None:
    """Simulated traffic until each image of the version has the planned impressions."""
    run_simulation(
        SimulationPlan(
            url=plan.url,
            populations=parse_populations(plan.objective),
            users=plan.users,
            rate=plan.rate,
            impressions=version["batch_size"] * plan.impressions_per_image,
            placement=plan.placement,
            seed=plan.seed * 1000 + round_,
        ),
        progress=plan.progress,
    )


def measured_pir(client: ServiceClient, version_id: int, placement: str) -> list[float]:
    return [r["pir"] for r in client.per_image(version_id, placement) if r["pir"] is not None]


def run_via_api(plan: ViaApiPlan) -> dict[str, Any]:
    started = time.monotonic()
    objective = load_objective(plan.objective)
    client = ServiceClient(plan.url)
    version = client.serving()
    first_images = client.images(version["id"], plan.placement)
    rounds = []
    for round_ in range(plan.rounds):
        log.info("round %d: traffic on version %s", round_ + 1, version["id"])
        drive(client, plan, version, 2 * round_)
        log.info("waiting for the service's cycle to serve a child of version %s", version["id"])
        child = client.wait_for_child(version["id"], plan.cycle_timeout)
        drive(client, plan, child, 2 * round_ + 1)
        before_images = client.images(version["id"], plan.placement)
        after_images = client.images(child["id"], plan.placement)
        measured = compare(
            measured_pir(client, version["id"], plan.placement),
            measured_pir(client, child["id"], plan.placement),
        )
        true = compare(objective(before_images).tolist(), objective(after_images).tolist())
        child = next(v for v in client.versions() if v["id"] == child["id"])
        estimated = child["metrics"].get("estimated_delta")
        rounds.append(
            {
                "round": round_ + 1,
                "version_before": version["id"],
                "version_after": child["id"],
                "pre_mean": measured.before.mean,
                "post_mean": measured.after.mean,
                "pre_ci": [measured.before.ci_low, measured.before.ci_high],
                "post_ci": [measured.after.ci_low, measured.after.ci_high],
                "delta": measured.delta,
                "effect_size": measured.effect_size,
                "p_value": measured.p_value,
                "significant": measured.significant,
                "estimated_delta": estimated,
                "true_pre_mean": true.before.mean,
                "true_post_mean": true.after.mean,
                "true_delta": true.delta,
                "true_effect_size": true.effect_size,
                "true_p_value": true.p_value,
                "diversity_pre": diversity_score(before_images),
                "diversity_post": diversity_score(after_images),
                "tuning_steps": child["metrics"].get("tuning", {}).get("steps"),
            }
        )
        version = child
    report: dict[str, Any] = {
        "objective": plan.objective,
        "objective_description": objective.describe(),
        "via_api": plan.url,
        "placement": plan.placement,
        "rounds": rounds,
        "images": version["batch_size"],
        "impressions": plan.impressions_per_image,
        "steps": rounds[-1]["tuning_steps"] if rounds else None,
        "seconds": time.monotonic() - started,
        "device": "service",
    }
    if plan.grid_path:
        last = client.images(version["id"], plan.placement)
        count = min(32, len(first_images), len(last))
        # Top rows: the first version's batch; bottom rows: the last version's.
        save_grid(torch.cat([first_images[:count], last[:count]]), plan.grid_path, nrow=8)
        report["grid_path"] = plan.grid_path
    if plan.json_path:
        path = Path(plan.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    return report
