"""Learning efficiency: the fewest impressions per image that give a significant gain
(Welch p < 0.001) on an objective, found by a sweep with the offline loop.

    .venv/bin/python -m bench.efficiency [--objective color:blue] [--images 1000] \\
        [--sweep 25 50 100 200 400 1000] [--steps S] [--estimator-width W]

The anchor is the paper's budget of 1000 impressions per image; the ratio printed is ours over
theirs. Writes bench/results/efficiency.json for color:blue, efficiency_<objective>.json for
any other objective.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace

from bench.common import write_result
from worker.ml.estimator import EstimatorConfig
from worker.ml.experiment import ExperimentConfig, run_experiment

PAPER_IMPRESSIONS_PER_IMAGE = 1000
ALPHA = 0.001


def slug(objective: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", objective.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="color:blue")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sweep", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="tuning steps; default tuning's")
    parser.add_argument("--estimator-width", type=int, default=None)
    parser.add_argument("--stop-at-first", action="store_true", help="stop once significant")
    args = parser.parse_args()
    estimator = EstimatorConfig()
    if args.estimator_width is not None:
        estimator = replace(estimator, width=args.estimator_width)
    rows = []
    started = time.monotonic()
    for impressions in sorted(args.sweep):
        result = run_experiment(
            ExperimentConfig(
                objective=args.objective,
                preset=args.preset,
                images=args.images,
                impressions=impressions,
                seed=args.seed,
                steps=args.steps,
                estimator=estimator,
            ),
            progress=False,
        )
        r = result["rounds"][0]
        row = {
            "impressions_per_image": impressions,
            "impressions_per_round": impressions * args.images,
            "delta": r["delta"],
            "effect_size": r["effect_size"],
            "p_value": r["p_value"],
            "significant": r["p_value"] < ALPHA and r["delta"] > 0,
            "estimated_delta": r["estimated_delta"],
            "diversity_ratio": r["diversity_ratio"],
            "seconds": result["seconds"],
        }
        rows.append(row)
        print(
            f"{impressions:5d} impressions/image: delta {row['delta']:+.4f} "
            f"d={row['effect_size']:.2f} p={row['p_value']:.2g} "
            f"est={row['estimated_delta']:+.4f} ({row['seconds']:.0f} s)",
            flush=True,
        )
        if args.stop_at_first and row["significant"]:
            break
    needed = next((r["impressions_per_image"] for r in rows if r["significant"]), None)
    if needed is None:
        print(f"no setting in the sweep reached p < {ALPHA}")
    else:
        ratio = needed / PAPER_IMPRESSIONS_PER_IMAGE
        print(f"fewest impressions per image for p < {ALPHA}: {needed} ({ratio:.3f}x the paper's)")
    name = "efficiency" if args.objective == "color:blue" else f"efficiency_{slug(args.objective)}"
    path = write_result(
        name,
        {
            "settings": vars(args),
            "rows": rows,
            "fewest_significant": needed,
            "ratio_to_paper": needed / PAPER_IMPRESSIONS_PER_IMAGE if needed else None,
            "seconds": time.monotonic() - started,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
