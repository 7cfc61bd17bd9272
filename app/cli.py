"""The `pirloop` command. Heavy modules (torch, the worker) are imported inside the commands
that need them, so `pirloop serve` starts on an image without torch."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from app.errors import ServiceUnready
from app.settings import SettingsInvalid

# rich_markup_mode="markdown": help text is reflowed to the terminal's width. Typer's default
# ("rich") keeps the docstrings' line breaks, which broke sentences in the command list.
app = typer.Typer(
    help="pirloop: improve an image generator from people's interactions with its images.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
db_app = typer.Typer(
    help="Database schema (Alembic migrations).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(db_app, name="db")


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Bad input (an unknown preset, an objective that does not import, a corrupt checkpoint,
    a missing folder) ends the command with its message, not a stack trace."""
    try:
        yield
    except SettingsInvalid:
        raise  # main() says it
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    except (TimeoutError, ServiceUnready) as exc:
        # The service did not do what the run waits for: say why, no stack trace.
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc


@contextmanager
def _metrics_dir(enabled: bool) -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the processes this command starts (uvicorn workers, a
    Celery pool), set before any of them imports prometheus_client, so that a scrape sums
    them all (app/metrics.py). One the operator set is used and kept; else a fresh one is
    made for this run and removed when it ends."""
    if not enabled or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        if enabled:
            Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        yield
        return
    if "prometheus_client" in sys.modules:  # too late for this process (app/metrics.py)
        logging.getLogger(__name__).warning(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: this "
            "process keeps its metrics in memory"
        )
    path = tempfile.mkdtemp(prefix="pirloop-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # uvicorn re-raises the SIGTERM it shut down on; by default that would end the process
    # before the directory is removed.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    # Rich's handler shares the console with progress bars, so log lines and live progress
    # do not overwrite each other.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
    )
    # One line per HTTP request drowns the progress people came to see.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Alembic revision to reach")] = "head",
) -> None:
    """Migrate the database (PIRLOOP_DATABASE_URL, or the embedded SQLite file) to REVISION."""
    from app import migrate

    migrate.upgrade(revision=revision)
    typer.echo(f"database upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Option(help="Alembic revision to go back to")] = "base",
) -> None:
    """Migrate the database down to REVISION (base: empty)."""
    from app import migrate

    migrate.downgrade(revision=revision)
    typer.echo(f"database downgraded to {revision}")


@app.command()
def init(
    placeholder: Annotated[
        bool, typer.Option(help="serve placeholder images instead of the generator's")
    ] = False,
) -> None:
    """Create the first generator version (v1) and its image batch if the database has none."""
    from app.bootstrap import ensure_initial_version
    from app.database import engine_from_settings, make_session_factory
    from app.settings import get_settings

    _setup_logging()
    settings = get_settings()
    engine = engine_from_settings(settings)
    created = ensure_initial_version(
        make_session_factory(engine), settings, placeholder=placeholder or None
    )
    engine.dispose()
    typer.echo(f"created version {created}" if created else "a generator version exists already")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP service. On the embedded defaults it also migrates the SQLite file and
    creates the first version (v1), so it works with no other step."""
    import uvicorn

    from app.settings import get_settings

    _setup_logging()
    settings = get_settings()
    if settings.is_sqlite:
        from app import migrate
        from app.bootstrap import ensure_initial_version
        from app.database import engine_from_settings, make_session_factory

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade()
        engine = engine_from_settings(settings)
        ensure_initial_version(make_session_factory(engine), settings)
        engine.dispose()
    with _metrics_dir(settings.metrics_enabled):
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # X-Forwarded-For is believed from these peers only (PIRLOOP_FORWARDED_ALLOW_IPS):
            # behind a proxy elsewhere than on this host, every visitor would otherwise be
            # the proxy's address to the per-address rate limit.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_level="info",
        )


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues")] = "ml,default",
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 1,
    beat: Annotated[bool, typer.Option(help="also run the beat scheduler (one only!)")] = False,
) -> None:
    """Run a Celery worker on PIRLOOP_REDIS_URL (needs the worker extra: torch)."""
    from app.settings import get_settings

    settings = get_settings()
    argv = ["worker", "-Q", queues, "--concurrency", str(concurrency), "--loglevel", "INFO"]
    if beat:
        argv += ["--beat", "--schedule", str(_beat_schedule_file(settings.data_dir))]
    with _metrics_dir(settings.metrics_enabled):
        from worker.celery_app import celery_app  # imports prometheus_client: after the setup

        celery_app.worker_main(argv)


@app.command()
def beat() -> None:
    """Run the Celery beat scheduler (exactly one per deployment)."""
    from app.settings import get_settings
    from worker.celery_app import celery_app

    schedule = _beat_schedule_file(get_settings().data_dir)
    celery_app.start(["beat", "--loglevel", "INFO", "--schedule", str(schedule)])


def _beat_schedule_file(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / "celerybeat-schedule"


@app.command()
def pretrain(
    preset: Annotated[
        str, typer.Option(help="model preset: tiny, cpu-small, cpu-medium or paper")
    ] = "cpu-small",
    images: Annotated[
        Path | None,
        typer.Option(
            help="a folder of your own images (PNG, JPEG, WebP, GIF, BMP; searched "
            "recursively), centre-cropped square and resized to the preset's size, instead of "
            "the built-in landscapes; other and unreadable files are skipped with a warning"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="directory for gan.pt and samples.png [default: var/pretrained/PRESET, or "
            "var/pretrained/PRESET-FOLDER with --images]",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    steps: Annotated[int | None, typer.Option(help="override the preset's step count")] = None,
    resume: Annotated[bool, typer.Option(help="resume from OUT/gan.pt if present")] = True,
) -> None:
    """Pretrain the GAN on the built-in landscapes, or on your own images with --images, and
    write a checkpoint. Serve one of your own with PIRLOOP_PRESET=OUT/gan.pt."""
    from worker.ml.experiment import pretrain_command
    from worker.ml.landscapes import ImageFolderError

    _setup_logging()
    with _clear_errors():
        try:
            pretrain_command(
                preset=preset,
                out=out,
                images=images,
                device=device,
                resume=resume,
                steps_override=steps,
            )
        except ImageFolderError as exc:
            # One line that names the folder: nothing to pretrain on.
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2) from None


@app.command()
def experiment(
    objective: Annotated[str, typer.Option(help="objective spec, e.g. color:blue")],
    preset: Annotated[str, typer.Option(help="model preset")] = "cpu-small",
    images: Annotated[int, typer.Option(help="images per round")] = 1000,
    impressions: Annotated[int, typer.Option(help="impressions per image")] = 100,
    rounds: Annotated[int, typer.Option(help="rounds of estimate-then-tune")] = 1,
    steps: Annotated[int | None, typer.Option(help="tuning steps per round")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    via_api: Annotated[
        str | None,
        typer.Option(
            help="drive a running service at this URL instead of running offline: its own "
            "loop learns from the logged traffic (--images and --preset are the service's)"
        ),
    ] = None,
    users: Annotated[int, typer.Option(help="virtual users (--via-api)")] = 8,
    rate: Annotated[float, typer.Option(help="impressions/s, 0 unlimited (--via-api)")] = 0,
    json_path: Annotated[Path, typer.Option("--json", help="where to write the report")] = Path(
        "var/experiment.json"
    ),
    grid: Annotated[Path | None, typer.Option(help="before/after grid PNG")] = None,
    estimator_width: Annotated[
        int, typer.Option(help="channels of the estimator CNN's first layer (offline)")
    ] = 32,
    explore_scale: Annotated[
        float,
        typer.Option(help="latent scale of the batch shown to simulated people (offline)"),
    ] = 1.0,
    learn_objective: Annotated[
        str | None,
        typer.Option(
            help="what users like while the service gathers training data (--via-api; default: "
            "--objective). neg:SPEC here and SPEC as --objective makes a worse candidate"
        ),
    ] = None,
    drift: Annotated[
        list[str] | None,
        typer.Option(help="base-rate drift for --via-api, as in `pirloop simulate --drift`"),
    ] = None,
    propensity: Annotated[
        str | None, typer.Option(help="per-visitor propensity (--via-api), e.g. gamma:2")
    ] = None,
    novelty: Annotated[
        str | None, typer.Option(help="novelty lift of a new version (--via-api), e.g. 0.1:20")
    ] = None,
) -> None:
    """Run the learning loop against a simulated objective and report the change: offline
    (generate, observe, estimate, tune, measure), or through a running service (--via-api)."""
    _setup_logging()
    with _clear_errors():
        _experiment(**locals())


def _experiment(
    *,
    objective: str,
    preset: str,
    images: int,
    impressions: int,
    rounds: int,
    steps: int | None,
    seed: int,
    device: str,
    via_api: str | None,
    users: int,
    rate: float,
    json_path: Path,
    grid: Path | None,
    estimator_width: int,
    explore_scale: float,
    learn_objective: str | None,
    drift: list[str] | None,
    propensity: str | None,
    novelty: str | None,
) -> None:
    if via_api:
        from worker.sim.traffic import parse_traffic
        from worker.sim.via_api import ViaApiPlan, run_via_api

        report = run_via_api(
            ViaApiPlan(
                url=via_api,
                objective=objective,
                impressions_per_image=impressions,
                rounds=rounds,
                users=users,
                rate=rate,
                seed=seed,
                json_path=str(json_path),
                grid_path=str(grid or json_path.with_suffix(".png")),
                learn_objective=learn_objective,
                traffic=parse_traffic(
                    drift=drift or (), propensity=propensity, novelty=novelty, arrivals=None
                ),
            )
        )
        from app.report import print_loop_report

        print_loop_report(report)
        return
    from worker.ml.experiment import experiment_command

    experiment_command(
        objective=objective,
        preset=preset,
        images=images,
        impressions=impressions,
        rounds=rounds,
        steps=steps,
        seed=seed,
        device=device,
        json_path=str(json_path),
        grid_path=str(grid) if grid else None,
        estimator_width=estimator_width,
        explore_scale=explore_scale,
    )


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="base URL of the pirloop service")],
    objective: Annotated[
        str,
        typer.Option(
            help="population: an objective spec (color:blue, neg:color:blue, py:mod:fn, ...) or"
            " bot:click-all / bot:flood; mix with weights: 'color:blue=0.9,bot:click-all=0.1'"
        ),
    ],
    users: Annotated[int, typer.Option(help="concurrent virtual users")] = 10,
    rate: Annotated[float, typer.Option(help="impressions per second in all; 0: unlimited")] = 20,
    duration: Annotated[float | None, typer.Option(help="seconds to run")] = None,
    impressions: Annotated[int | None, typer.Option(help="impressions to make in all")] = None,
    placement: Annotated[str, typer.Option(help="background (clicks) or rating (stars)")] = (
        "background"
    ),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="base rate over time, for every image alike: daily:AMPLITUDE[:PERIOD_S], "
            "step:CHANGE:AT_S or trend:CHANGE[:PER_S] (e.g. daily:0.3:60, step:0.5:30, "
            "trend:-0.2); repeat to combine"
        ),
    ] = None,
    propensity: Annotated[
        str | None,
        typer.Option(help="per-visitor click multiplier with mean 1: gamma:SHAPE (e.g. gamma:2)"),
    ] = None,
    novelty: Annotated[
        str | None,
        typer.Option(
            help="lift for a generator version that turns up while they run, halving each "
            "half-life: "
            "LIFT:SECONDS or LIFT:IMPRESSIONSimp (e.g. 0.1:20 for +10% with a half-life of "
            "20 s, 0.1:500imp for 500 impressions)"
        ),
    ] = None,
    arrivals: Annotated[
        str | None,
        typer.Option(
            help="visitors come and go: poisson:PAGES (Poisson page views, geometric pages per "
            "visitor with mean PAGES); default: 5 pages each at an even pace"
        ),
    ] = None,
) -> None:
    """Drive the HTTP API with simulated users whose preferences are known functions of the
    image. Their traffic is flagged simulated. They wait out 429s as Retry-After asks; the
    summary counts errors by kind and says why they happened."""
    from worker.sim.traffic import parse_traffic
    from worker.sim.users import SimulationPlan, parse_populations, run_simulation

    with _clear_errors():
        plan = SimulationPlan(
            url=url,
            populations=parse_populations(objective),
            users=users,
            rate=rate,
            duration=duration,
            impressions=impressions,
            placement=placement,
            seed=seed,
            traffic=parse_traffic(
                drift=drift or (), propensity=propensity, novelty=novelty, arrivals=arrivals
            ),
        )
        summary = run_simulation(plan)
    import json

    report = summary.as_dict()
    if plan.traffic:
        report["traffic"] = plan.traffic.describe()
    typer.echo(json.dumps(report, indent=2))
    if summary.impressions == 0:
        # A run that made nothing has failed, whatever kept it from the service.
        errors = ", ".join(f"{kind} x{count}" for kind, count in summary.errors.items())
        typer.echo(
            f"Error: no impression was made ({errors or 'no request succeeded'}); "
            f"check that {url} is a running pirloop service that is serving",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def demo(
    objective: Annotated[str, typer.Option(help="what the simulated users like")] = "color:blue",
    images: Annotated[int, typer.Option(help="images per version")] = 200,
    impressions: Annotated[int, typer.Option(help="impressions per image")] = 50,
    port: Annotated[int, typer.Option(help="port of the demo service")] = 8000,
    keep_serving: Annotated[bool, typer.Option(help="leave the service running at the end")] = (
        False
    ),
    steps: Annotated[int | None, typer.Option(help="tuning steps (default: the loop's)")] = None,
    preset: Annotated[str, typer.Option(help="generator preset")] = "cpu-small",
) -> None:
    """The main job: serve cpu-small on the embedded defaults, drive it with simulated users,
    let the loop run one full cycle, and print what changed."""
    from worker.demo import DemoPlan, run_demo

    _setup_logging()
    with _clear_errors():
        run_demo(
            DemoPlan(
                objective=objective,
                images=images,
                impressions=impressions,
                port=port,
                keep_serving=keep_serving,
                tuning_steps=steps,
                preset=preset,
            )
        )


def main() -> None:
    try:
        app()
    except SettingsInvalid as exc:
        # Any command reads the settings: a bad PIRLOOP_* value is one line, not a traceback.
        typer.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None
