"""The paper's results table, reproduced on simulated objectives with the offline loop.

    .venv/bin/python bench/paper_table.py [--group single|two|three|filter|all] \\
        [--images 1000] [--impressions 50] [--steps N] [--seeds 1] [--rounds 1]

Per objective: mean PIR before and after, change, Cohen's d, Welch p, estimated change / true
change, diversity after / before. Writes bench/results/paper_table.json and a Markdown table
(bench/results/paper_table.md) to paste into docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from worker.ml.experiment import ExperimentConfig, run_experiment

COLOURS = ("red", "green", "blue")
GROUPS: dict[str, list[str]] = {
    "single": [f"color:{c}" for c in COLOURS],
    "two": [f"color:{a}-{b}" for a, b in itertools.permutations(COLOURS, 2)],
    "three": ["color:" + "-".join(p) for p in itertools.permutations(COLOURS, 3)],
    # An early, a middle and a late layer of the reference network, K = 1 and K = 20.
    "filter": [
        f"filter:{layer}:{k}:0" for layer in ("conv1_2", "conv3_3", "conv5_3") for k in (1, 20)
    ],
}
ALPHA = 0.001


def run_objective(objective: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    cfg = ExperimentConfig(
        objective=objective,
        preset=args.preset,
        images=args.images,
        impressions=args.impressions,
        rounds=args.rounds,
        seed=seed,
        steps=args.steps,
    )
    result = run_experiment(cfg, progress=False)
    last = result["rounds"][-1]
    first = result["rounds"][0]
    true_delta = last["post_mean"] - first["pre_mean"]
    return {
        "objective": objective,
        "seed": seed,
        "pre_mean": first["pre_mean"],
        "post_mean": last["post_mean"],
        "delta": last["delta"],
        "effect_size": last["effect_size"],
        "p_value": last["p_value"],
        "significant": last["p_value"] < ALPHA,
        "estimated_over_true": last["estimated_delta"] / last["delta"]
        if last["delta"]
        else math.nan,
        "diversity_ratio": last["diversity_post"] / max(last["diversity_pre"], 1e-12),
        "total_true_delta": true_delta,
        "seconds": result["seconds"],
        "steps": result["steps"],
        "impressions_per_round": args.images * args.impressions,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| objective | seed | PIR before | PIR after | change | d | Welch p | est./true"
        " | diversity after/before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['objective']}` | {r['seed']} | {r['pre_mean']:.4f} | {r['post_mean']:.4f} | "
            f"{r['delta']:+.4f} | {r['effect_size']:.2f} | {r['p_value']:.2g} | "
            f"{r['estimated_over_true']:.2f} | {r['diversity_ratio']:.2f} |"
        )
    significant = sum(r["significant"] for r in rows)
    ratios = [r["estimated_over_true"] for r in rows if math.isfinite(r["estimated_over_true"])]
    lines.append("")
    lines.append(
        f"{significant} of {len(rows)} significant at p < {ALPHA}; mean estimated/true change "
        f"{statistics.mean(ratios) if ratios else math.nan:.2f}; min diversity ratio "
        f"{min(r['diversity_ratio'] for r in rows):.2f}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=[*GROUPS, "all"], nargs="+", default=["single"])
    parser.add_argument("--objectives", nargs="*", help="explicit objective specs instead")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--impressions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    groups = list(GROUPS) if "all" in args.group else args.group
    objectives = args.objectives or [o for group in groups for o in GROUPS[group]]
    rows = []
    started = time.monotonic()
    for objective in objectives:
        for seed in range(args.seeds):
            row = run_objective(objective, args, seed)
            rows.append(row)
            print(
                f"{objective:24} seed {seed}: {row['pre_mean']:.4f} -> {row['post_mean']:.4f} "
                f"d={row['effect_size']:.2f} p={row['p_value']:.2g} "
                f"est/true={row['estimated_over_true']:.2f} div={row['diversity_ratio']:.2f} "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
            # Written after every row: a long table that is stopped keeps what it measured.
            table = markdown(rows)
            RESULTS.mkdir(parents=True, exist_ok=True)
            Path(RESULTS / "paper_table.md").write_text(table + "\n")
            path = write_result(
                "paper_table",
                {"settings": vars(args), "rows": rows, "seconds": time.monotonic() - started},
            )
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
