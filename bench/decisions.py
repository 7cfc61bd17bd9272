"""Rollout decisions on simulated traffic: false promotions, power and harm of the sequential rule.

    .venv/bin/python -m bench.decisions [--aa-comparisons 1000] [--power-comparisons 400] \\
        [--harm-comparisons 400] [--jobs 2] [--seed 0] [policy flags: --alpha, --mixing-lift ...]

Count level (numpy, no HTTP, no database). The decision at every simulated scheduler tick is
app.decision.decide, the function the service calls (app/rollout.py look()), on arms summarized
by app.sequential.summarize_arm as app/measurement.py summarizes them; the old design is judged
by app.stats.compare, as pirloop judged a version before rollouts.

Model. A generator is a distribution of per-image true PIR: Beta with mean base_pir (plus the
candidate's true effect) and between-image sd. Each arm draws its own batch of K images. Page
views arrive as a Poisson stream, the scheduler looks every tick_seconds, each impression goes
to the candidate with probability candidate_share, and within an arm the least-served image is
shown (counts stay even). A click is Bernoulli with the image's PIR times the base rate's drift
at that moment: TrafficModel.drift_factor from worker/sim/traffic.py, the simulator's own model,
clipped to [0, 1] as its click_probability does. The ramp is not modelled: the service leaves
its impressions out of the decision, so a rollout here starts where the ramp ends, at a random
time of the (compressed) day.

Per comparison the same batches and the same traffic are also read by analyses that are wrong
on purpose, so their error shows beside the valid one: Welch's t-test on per-image PIR read at
every tick (a fixed-horizon test peeked at), and impressions taken as independent (pooled
clicks over impressions) although the batches are fixed. The old design serves the champion's
batch alone to its target, then the candidate's batch alone, and runs Welch's test at
alpha = 0.001 (the same batches, the same drifting day).

Writes bench/results/decisions.json and bench/results/decisions.svg (promotion probability
against the true effect, new and old design).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from app.decision import DecisionPolicy, MetricArms, Outcome, decide
from app.sequential import mixture_sprt, summarize_arm
from app.stats import compare, proportion_interval
from bench.common import RESULTS, write_result
from worker.sim.traffic import Drift, TrafficModel

NAME = "decisions"


@dataclass(frozen=True)
class SimConfig:
    """The simulated service and its traffic (defaults: the service's settings)."""

    images_per_arm: int = 200  # PIRLOOP_BATCH_SIZE
    base_pir: float = 0.35
    between_image_sd: float = 0.10
    impressions_per_second: float = 10.0
    tick_seconds: float = 10.0  # PIRLOOP_SCHEDULER_INTERVAL_SECONDS
    candidate_share: float = 0.5  # PIRLOOP_ROLLOUT_CANDIDATE_SHARE
    # The daily cycle: rate x (1 + amplitude sin(2 pi t / day_seconds)); 0 is no drift.
    daily_amplitude: float = 0.0
    day_seconds: float = 3600.0  # a compressed day: the default budget spans about one
    # The old design: each batch alone to this many impressions per image, Welch at old_alpha.
    target_impressions_per_image: int = 50  # PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE
    old_alpha: float = 0.001

    def traffic(self) -> TrafficModel:
        if self.daily_amplitude == 0:
            return TrafficModel()
        return TrafficModel(drift=(Drift("daily", self.daily_amplitude, self.day_seconds),))


def draw_images(rng: np.random.Generator, *, mean: float, sd: float, count: int) -> np.ndarray:
    """True per-image PIRs of one batch: Beta with this mean and between-image sd."""
    if not (0 < mean < 1 and 0 < sd * sd < mean * (1 - mean)):
        raise ValueError(f"no Beta distribution has mean {mean} and sd {sd}")
    concentration = mean * (1 - mean) / (sd * sd) - 1
    return rng.beta(mean * concentration, (1 - mean) * concentration, size=count)


@dataclass(frozen=True)
class Served:
    """An arm's cumulative counts after each tick, one column per image."""

    trials: np.ndarray  # (ticks, images) impressions
    clicks: np.ndarray  # (ticks, images)

    @property
    def impressions(self) -> np.ndarray:
        return self.trials.sum(axis=1)


def serve(
    rng: np.random.Generator,
    arms: Sequence[np.ndarray],
    shares: Sequence[float],
    *,
    ticks: int,
    start_s: float,
    config: SimConfig,
    traffic: TrafficModel,
    cap: int | None = None,
) -> list[Served]:
    """Impressions and clicks of concurrently served arms, tick by tick.

    start_s: the traffic model's clock at the first tick (the time of day). cap: stop serving an
    arm once it has this many impressions (the old design's target)."""
    arrivals = rng.poisson(config.impressions_per_second * config.tick_seconds, size=ticks)
    per_arm = (
        arrivals[:, None]
        if len(arms) == 1
        else np.stack([rng.multinomial(n, shares) for n in arrivals])
    )
    cumulative = np.cumsum(per_arm, axis=0)
    if cap is not None:
        cumulative = np.minimum(cumulative, cap)
    mid_tick = start_s + (np.arange(ticks) + 0.5) * config.tick_seconds
    factor = np.array([traffic.drift_factor(float(t)) for t in mid_tick])
    served = []
    for index, pirs in enumerate(arms):
        images = pirs.size
        order = np.arange(images)
        counts = cumulative[:, index, None]
        # Least-served first: after c impressions every image has c // K, the first c % K one more.
        trials = counts // images + (order[None, :] < counts % images)
        new_trials = np.diff(trials, axis=0, prepend=0)
        probability = np.clip(pirs[None, :] * factor[:, None], 0.0, 1.0)
        clicks = np.cumsum(rng.binomial(new_trials, probability), axis=0)
        served.append(Served(trials=trials, clicks=clicks))
    return served


def _welch(champion: Served, candidate: Served) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t statistic and two-sided p-value on per-image PIR, at every tick."""
    moments = []
    for arm in (champion, candidate):
        seen = arm.trials > 0
        n = seen.sum(axis=1)
        values = np.where(seen, arm.clicks / np.maximum(arm.trials, 1), 0.0)
        mean = values.sum(axis=1) / np.maximum(n, 1)
        var = (np.where(seen, (values - mean[:, None]) ** 2, 0.0)).sum(axis=1) / np.maximum(
            n - 1, 1
        )
        moments.append((n, mean, var / np.maximum(n, 1)))
    (n_a, mean_a, se2_a), (n_b, mean_b, se2_b) = moments
    se2 = se2_a + se2_b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean_b - mean_a) / np.sqrt(se2)
        df = se2**2 / (se2_a**2 / np.maximum(n_a - 1, 1) + se2_b**2 / np.maximum(n_b - 1, 1))
    p = 2 * scipy_stats.t.sf(np.abs(t), df)
    return np.nan_to_num(t), np.where(np.isfinite(p), p, 1.0)


def _first_significant(t: np.ndarray, p: np.ndarray, alpha: float, looks: slice) -> str:
    """A test peeked at: stops at the first look with p < alpha."""
    hits = np.flatnonzero(p[looks] < alpha)
    if hits.size == 0:
        return "none"
    return "promote" if t[looks][hits[0]] > 0 else "reject"


def run_comparison(
    *, effect: float, seed: Sequence[int], config: SimConfig, policy: DecisionPolicy
) -> dict[str, Any]:
    """One rollout of a candidate generator whose mean PIR differs by `effect`, decided by
    decide() at every tick; plus the wrong analyses and the old before/after design on the same
    batches and the same day."""
    rng = np.random.default_rng(list(seed))
    traffic = config.traffic()
    k = config.images_per_arm
    champion_pirs = draw_images(rng, mean=config.base_pir, sd=config.between_image_sd, count=k)
    candidate_pirs = draw_images(
        rng, mean=config.base_pir + effect, sd=config.between_image_sd, count=k
    )
    start_s = float(rng.uniform(0, config.day_seconds))
    shares = (1 - config.candidate_share, config.candidate_share)
    per_tick = config.impressions_per_second * config.tick_seconds
    ticks = math.ceil(policy.max_trials_per_arm / (min(shares) * per_tick) * 1.25) + 10
    champion, candidate = serve(
        rng,
        [champion_pirs, candidate_pirs],
        shares,
        ticks=ticks,
        start_s=start_s,
        config=config,
        traffic=traffic,
    )
    n_champion, n_candidate = champion.impressions, candidate.impressions

    outcome, stop, frozen_looks = "undecided", ticks - 1, 0
    for tick in range(ticks):
        arms = MetricArms(
            "pir",
            summarize_arm(
                champion.clicks[tick].tolist(), champion.trials[tick].tolist(), bounded=True
            ),
            summarize_arm(
                candidate.clicks[tick].tolist(), candidate.trials[tick].tolist(), bounded=True
            ),
        )
        decision = decide(
            arms,
            (),
            arm_impressions=(int(n_champion[tick]), int(n_candidate[tick])),
            expected_shares=shares,
            policy=policy,
        )
        frozen_looks += decision.frozen
        if decision.outcome is Outcome.promote:
            outcome, stop = "promote", tick
            break
        if decision.outcome is Outcome.reject:
            outcome, stop = ("harm" if decision.breached else "futility"), tick
            break

    # The wrong analyses see the same looks: from the first with the policy's minimum data up
    # to the one where the futility budget is spent.
    fewest = np.minimum(n_champion, n_candidate)
    first = int(np.argmax(fewest >= policy.min_trials_per_arm))
    spent = fewest >= policy.max_trials_per_arm
    budget = int(np.argmax(spent)) if spent[-1] else ticks - 1
    looks = slice(first, budget + 1)
    t, p = _welch(champion, candidate)
    pooled_a = champion.clicks.sum(axis=1) / np.maximum(n_champion, 1)
    pooled_b = candidate.clicks.sum(axis=1) / np.maximum(n_candidate, 1)
    pooled_var = pooled_a * (1 - pooled_a) / np.maximum(n_champion, 1) + pooled_b * (
        1 - pooled_b
    ) / np.maximum(n_candidate, 1)
    z_once = (pooled_b[budget] - pooled_a[budget]) / math.sqrt(pooled_var[budget])
    # A test that is always valid for independent impressions (the same mSPRT), with the
    # binomial variance of pooled impressions: wrong here only because the batches are fixed.
    pooled_msprt = "none"
    for tick in range(first, budget + 1):
        evidence = mixture_sprt(
            float(pooled_b[tick] - pooled_a[tick]),
            float(pooled_var[tick]),
            tau=max(policy.mixing_lift * float(pooled_a[tick]), 1e-3),
            alpha=policy.alpha,
        )
        if evidence.ci_low > 0 or evidence.ci_high < 0:
            pooled_msprt = "promote" if evidence.ci_low > 0 else "reject"
            break

    old = before_after(rng, champion_pirs, candidate_pirs, start_s=start_s, config=config)
    return {
        "effect": effect,
        "outcome": outcome,
        "champion_impressions": int(n_champion[stop]),
        "candidate_impressions": int(n_candidate[stop]),
        "seconds": (stop + 1) * config.tick_seconds,
        "frozen_looks": int(frozen_looks),
        "batch_delta": float(candidate_pirs.mean() - champion_pirs.mean()),
        "welch_peeked": _first_significant(t, p, policy.alpha, looks),
        "welch_peeked_old_alpha": _first_significant(t, p, config.old_alpha, looks),
        "welch_once_promote": bool(p[budget] < policy.alpha and t[budget] > 0),
        "pooled_once_promote": bool(z_once > scipy_stats.norm.isf(policy.alpha / 2)),
        "pooled_msprt": pooled_msprt,
        **old,
    }


def before_after(
    rng: np.random.Generator,
    champion_pirs: np.ndarray,
    candidate_pirs: np.ndarray,
    *,
    start_s: float,
    config: SimConfig,
) -> dict[str, Any]:
    """The old design: the champion's batch alone to its target, then the candidate's batch
    alone, then app.stats.compare (Welch on per-image PIR at old_alpha)."""
    traffic = config.traffic()
    per_tick = config.impressions_per_second * config.tick_seconds
    target = champion_pirs.size * config.target_impressions_per_image
    ticks = math.ceil(target / per_tick * 1.5) + 10
    phases = []
    clock = start_s
    for pirs in (champion_pirs, candidate_pirs):
        (arm,) = serve(
            rng,
            [pirs],
            [1.0],
            ticks=ticks,
            start_s=clock,
            config=config,
            traffic=traffic,
            cap=pirs.size * config.target_impressions_per_image,
        )
        reached = int(np.argmax(arm.impressions >= target))
        if arm.impressions[reached] < target:
            raise RuntimeError("the old design's phase did not reach its target")
        clock += (reached + 1) * config.tick_seconds
        phases.append((arm.clicks[reached] / arm.trials[reached]).tolist())
    result = compare(phases[0], phases[1], alpha=config.old_alpha)
    return {
        "old_promote": bool(result.significant and result.delta > 0),
        "old_reject": bool(result.significant and result.delta < 0),
        "old_delta": result.delta,
        "old_p": result.p_value,
    }


# --- Scenarios and the run --------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    effect: float
    daily_amplitude: float
    comparisons: int
    label: str


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    amplitude = args.daily_amplitude
    rows = [
        Scenario("aa", 0.0, 0.0, args.aa_comparisons, "A/A, no drift"),
        Scenario(
            "aa_daily", 0.0, amplitude, args.aa_comparisons, f"A/A, daily cycle ±{amplitude:.0%}"
        ),
    ]
    rows += [
        Scenario(f"gain_{g:g}", g, 0.0, args.power_comparisons, f"gain +{g:g}") for g in args.gains
    ]
    rows += [
        Scenario(f"loss_{x:g}", -x, 0.0, args.harm_comparisons, f"loss -{x:g}") for x in args.losses
    ]
    return [s for s in rows if s.comparisons > 0]


def _task(job: tuple[Scenario, int, int, SimConfig, DecisionPolicy]) -> tuple[str, dict[str, Any]]:
    scenario, index, seed, config, policy = job
    # The seed names the comparison, so results do not depend on how work is split.
    row = run_comparison(
        effect=scenario.effect,
        seed=(seed, zlib.crc32(scenario.name.encode()), index),
        config=replace(config, daily_amplitude=scenario.daily_amplitude),
        policy=policy,
    )
    return scenario.name, row


def rate(hits: int, total: int) -> dict[str, Any]:
    low, high = proportion_interval(hits, total) if total else (math.nan, math.nan)
    return {
        "count": hits,
        "of": total,
        "rate": hits / total if total else math.nan,
        "ci95": [low, high],
    }


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarise(rows: Sequence[dict[str, Any]], *, config: SimConfig) -> dict[str, Any]:
    n = len(rows)

    def count(key: str, value: Any = True) -> dict[str, Any]:
        return rate(sum(r[key] == value for r in rows), n)

    def per_arm(selected: Sequence[dict[str, Any]]) -> float | None:
        return _median(
            [(r["champion_impressions"] + r["candidate_impressions"]) / 2 for r in selected]
        )

    rejected = [r for r in rows if r["outcome"] in ("harm", "futility")]
    return {
        "comparisons": n,
        "promote": count("outcome", "promote"),
        "reject_harm": count("outcome", "harm"),
        "reject_futility": count("outcome", "futility"),
        "undecided": count("outcome", "undecided"),
        "median_impressions_per_arm": per_arm(rows),
        "median_impressions_per_arm_promoted": per_arm(
            [r for r in rows if r["outcome"] == "promote"]
        ),
        "median_candidate_impressions_rejected": _median(
            [r["candidate_impressions"] for r in rejected]
        ),
        "mean_candidate_impressions_rejected": (
            float(np.mean([r["candidate_impressions"] for r in rejected])) if rejected else None
        ),
        "median_candidate_impressions_harm": _median(
            [r["candidate_impressions"] for r in rows if r["outcome"] == "harm"]
        ),
        "median_hours": _median([r["seconds"] / 3600 for r in rows]),
        "with_srm_freeze": rate(sum(r["frozen_looks"] > 0 for r in rows), n),
        "most_frozen_looks": max((r["frozen_looks"] for r in rows), default=0),
        "welch_peeked_promote": count("welch_peeked", "promote"),
        "welch_peeked_old_alpha_promote": count("welch_peeked_old_alpha", "promote"),
        "welch_once_promote": count("welch_once_promote"),
        "pooled_once_promote": count("pooled_once_promote"),
        "pooled_msprt_promote": count("pooled_msprt", "promote"),
        "old_promote": count("old_promote"),
        "old_reject": count("old_reject"),
        "old_impressions_per_arm": config.images_per_arm * config.target_impressions_per_image,
        "batch_delta_sd": float(np.std([r["batch_delta"] for r in rows])) if n > 1 else None,
    }


def _pct(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['rate']:6.1%} [{low:.1%}, {high:.1%}]"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def report(
    summaries: dict[str, dict[str, Any]], plan: Sequence[Scenario], policy: DecisionPolicy
) -> str:
    lines = []
    null = [s for s in plan if s.effect == 0]
    if null:
        lines += [
            f"A/A false promotions (alpha = {policy.alpha}), 95% Wilson intervals",
            f"{'traffic':26} {'new: decide() each tick':26} {'old: before/after Welch':26} "
            f"{'Welch peeked each tick':26} {'impressions as independent':26}",
        ]
        for s in null:
            r = summaries[s.name]
            lines.append(
                f"{s.label:26} {_pct(r['promote']):26} {_pct(r['old_promote']):26} "
                f"{_pct(r['welch_peeked_promote']):26} {_pct(r['pooled_msprt_promote']):26}"
            )
        for s in null:
            r = summaries[s.name]
            lines.append(
                f"  {s.label}: harm rejections {_pct(r['reject_harm'])}, futility "
                f"{r['reject_futility']['rate']:.1%}, undecided {r['undecided']['rate']:.1%}, "
                f"SRM freeze in {r['with_srm_freeze']['rate']:.1%} (at most "
                f"{r['most_frozen_looks']} looks); Welch once at the budget "
                f"{r['welch_once_promote']['rate']:.1%}, Welch peeked at alpha "
                f"{0.001} {r['welch_peeked_old_alpha_promote']['rate']:.1%}, pooled z once "
                f"{r['pooled_once_promote']['rate']:.1%}; sd of the batches' true difference "
                f"{r['batch_delta_sd']:.4f}"
            )
        lines.append("")
    gains = [s for s in plan if s.effect > 0]
    if gains:
        lines += [
            "Power (no drift)",
            f"{'true gain':10} {'new: promoted':26} {'impr./arm':>10} {'if promoted':>12} "
            f"{'old: promoted':26} {'impr./arm':>10}",
        ]
        for s in gains:
            r = summaries[s.name]
            lines.append(
                f"{s.effect:<10g} {_pct(r['promote']):26} "
                f"{_num(r['median_impressions_per_arm']):>10} "
                f"{_num(r['median_impressions_per_arm_promoted']):>12} "
                f"{_pct(r['old_promote']):26} {_num(r['old_impressions_per_arm']):>10}"
            )
        lines.append("")
    losses = [s for s in plan if s.effect < 0]
    if losses:
        lines += [
            "Worse candidates (no drift): how many impressions the worse arm served before it "
            "was stopped",
            f"{'true loss':10} {'rejected':26} {'for harm':9} {'promoted':9} "
            f"{'median (all)':>12} {'median (harm)':>13} {'mean':>7}   "
            f"{'old: promoted':14} {'old: worse arm':>14}",
        ]
        for s in losses:
            r = summaries[s.name]
            rejected = r["reject_harm"]["count"] + r["reject_futility"]["count"]
            lines.append(
                f"{s.effect:<10g} {_pct(rate(rejected, r['comparisons'])):26} "
                f"{r['reject_harm']['rate']:<9.1%} {r['promote']['rate']:<9.1%} "
                f"{_num(r['median_candidate_impressions_rejected']):>12} "
                f"{_num(r['median_candidate_impressions_harm']):>13} "
                f"{_num(r['mean_candidate_impressions_rejected']):>7}   "
                f"{r['old_promote']['rate']:<14.1%} {_num(r['old_impressions_per_arm']):>14}"
            )
    return "\n".join(lines)


def plot(summaries: dict[str, dict[str, Any]], plan: Sequence[Scenario]) -> str:
    """Promotion probability against the true effect, new and old design (no drift)."""
    from app.plots import ScatterPoint, scatter

    points = []
    for s in plan:
        if s.daily_amplitude:
            continue
        r = summaries[s.name]
        for series, key in ((0, "promote"), (1, "old_promote")):
            points.append(
                ScatterPoint(
                    x=s.effect,
                    y=r[key]["rate"],
                    label=f"{s.label}: {r[key]['rate']:.1%}",
                    series=series,
                )
            )
    return str(
        scatter(
            points,
            series_names=["concurrent, decide() each tick", "before/after, Welch at 0.001"],
            title="Promotion probability against the true change in mean PIR",
            x_label="true change in the generator's mean PIR",
            y_label="share promoted",
        )
    )


def render(path: Path) -> None:
    """The table and the plot again from a results file (after a change of layout)."""
    data = json.loads(path.read_text())
    plan = [Scenario(**s) for s in data["scenarios"]]
    data["table"] = report(data["summaries"], plan, DecisionPolicy(**data["policy"]))
    path.with_suffix(".svg").write_text(plot(data["summaries"], plan) + "\n")
    path.write_text(json.dumps(data, indent=2))
    print(data["table"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa-comparisons", type=int, default=1000)
    parser.add_argument("--power-comparisons", type=int, default=400)
    parser.add_argument("--harm-comparisons", type=int, default=400)
    parser.add_argument("--gains", type=float, nargs="*", default=[0.005, 0.01, 0.02, 0.05])
    parser.add_argument("--losses", type=float, nargs="*", default=[0.01, 0.03])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=NAME, help="results file name under bench/results")
    parser.add_argument(
        "--render", action="store_true", help="only reprint the table and redraw the plot"
    )
    defaults = SimConfig()
    for field in fields(SimConfig):
        flag = "--" + field.name.replace("_", "-")
        default = 0.5 if field.name == "daily_amplitude" else getattr(defaults, field.name)
        parser.add_argument(flag, type=type(default), default=default)
    policy_defaults = DecisionPolicy()
    for field in fields(DecisionPolicy):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(getattr(policy_defaults, field.name)),
            default=None,
            help=f"decision policy (default {getattr(policy_defaults, field.name)})",
        )
    args = parser.parse_args(argv)
    if args.render:
        render(RESULTS / f"{args.output}.json")
        return
    config = SimConfig(**{f.name: getattr(args, f.name) for f in fields(SimConfig)})
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(DecisionPolicy)
        if getattr(args, f.name) is not None
    }
    policy = replace(policy_defaults, **overrides)
    plan = scenarios(args)
    command = " ".join([".venv/bin/python -m bench.decisions", *(argv or sys.argv[1:])])
    print(
        f"policy: {'DecisionPolicy() defaults' if not overrides else f'overrides {overrides}'}"
        f" -> {asdict(policy)}",
        flush=True,
    )
    print(f"simulation: {asdict(config)}", flush=True)

    jobs = [(s, index, args.seed, config, policy) for s in plan for index in range(s.comparisons)]
    rows: dict[str, list[dict[str, Any]]] = {s.name: [] for s in plan}
    started = time.monotonic()
    last_print = started
    context = multiprocessing.get_context("fork")
    with context.Pool(args.jobs) as pool:
        for done, (name, row) in enumerate(pool.imap_unordered(_task, jobs, chunksize=8), start=1):
            rows[name].append(row)
            now = time.monotonic()
            if now - last_print > 15 or done == len(jobs):
                last_print = now
                remaining = (now - started) / done * (len(jobs) - done)
                progress = ", ".join(f"{n} {len(r)}" for n, r in rows.items())
                print(
                    f"[{done}/{len(jobs)} comparisons, {(now - started) / 60:.1f} min, "
                    f"~{remaining / 60:.1f} min left] {progress}",
                    flush=True,
                )
    seconds = time.monotonic() - started

    summaries = {
        s.name: {
            **summarise(rows[s.name], config=replace(config, daily_amplitude=s.daily_amplitude)),
            "label": s.label,
            "effect": s.effect,
            "daily_amplitude": s.daily_amplitude,
        }
        for s in plan
    }
    text = report(summaries, plan, policy)
    print()
    print(text)
    checks = {
        s.name: summaries[s.name]["promote"]["ci95"][0] <= policy.alpha
        for s in plan
        if s.effect == 0
    }
    print(f"\nA/A check (95% interval's lower end <= alpha {policy.alpha}): {checks}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    svg = RESULTS / f"{args.output}.svg"
    svg.write_text(plot(summaries, plan) + "\n")
    path = write_result(
        args.output,
        {
            "command": command,
            "seed": args.seed,
            "seconds": seconds,
            "policy": asdict(policy),
            "policy_overrides": overrides,
            "simulation": asdict(config),
            "scenarios": [asdict(s) for s in plan],
            "summaries": summaries,
            "aa_check_lower_end_below_alpha": checks,
            "table": text,
        },
    )
    print(f"{seconds / 60:.1f} min; wrote {path} and {svg}")


if __name__ == "__main__":
    main()
