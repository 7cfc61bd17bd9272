"""Remake docs/screenshots/*.png from what pirloop really serves.

    make screenshots                          # = python -m bench.screenshots
    python -m bench.screenshots --no-cycle    # traffic only: quicker, the dashboard has v1 alone

A fresh service under var/screenshots is started as `pirloop demo` starts one, serving the
shipped cpu-medium generator (PIRLOOP_PRESET=cpu-medium; `--preset` changes it), so every
picture shows generated landscapes. Simulated users who like blue drive it through one full
learning cycle (estimator, tuning, a candidate rolled out beside v1, the sequential test's
decision), as in the demo; then Debian's chromium (/usr/bin/chromium, through Playwright)
photographs the embed demo's hero at 1280 px wide (/demo/host), /rate, and the admin dashboard,
on a desktop and a phone. That took 21 minutes on the 2 shared cores of the development box
(PIRLOOP_TORCH_THREADS=1, 2026-12-04); --no-cycle only logs some traffic (under a minute).

The pages' browser tests (tests/pages, PIRLOOP_SCREENSHOTS=1) photograph a seeded history of
placeholder images instead and write under var/screenshots-tests, never into docs/.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from worker.demo import DemoPlan, check_port_free, demo_env, run_cycle, start_server, wait_ready

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
OUT = Path("docs/screenshots")
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
IMAGES_LOADED = "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"


def drive_traffic(plan: DemoPlan, url: str, *, cycle: bool) -> None:
    if cycle:
        run_cycle(plan, url)
        return
    from worker.sim.users import SimulationPlan, parse_populations, run_simulation

    run_simulation(
        SimulationPlan(
            url=url,
            populations=parse_populations(plan.objective),
            users=plan.users,
            rate=0,
            impressions=plan.images * plan.impressions // 2,
            simulation_key=plan.simulation_key,
        )
    )


def _wait_images(page: Any) -> None:
    page.wait_for_function(IMAGES_LOADED, timeout=30_000)


def photograph(url: str, admin_token: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_context(viewport=DESKTOP).new_page()

            # The embed demo: its hero 1280 px wide, the background a served image at the
            # display width the script picked.
            page.goto(f"{url}/demo/host")
            page.wait_for_selector("#hero[data-pirloop-impression]", timeout=30_000)
            _wait_images(page)
            background = page.eval_on_selector(
                "#hero", "el => getComputedStyle(el).backgroundImage"
            )
            if "/v1/images/" not in background or "w=" not in background:
                raise RuntimeError(f"the hero shows no served display size: {background}")
            hero = page.eval_on_selector("#hero", "el => el.getBoundingClientRect().width")
            print(f"hero: {hero:.0f} px wide, background {background}")
            written.append(out / "embed-demo.png")
            page.screenshot(path=str(written[-1]), full_page=True)

            # /rate on a desktop, then on a phone.
            page.goto(f"{url}/rate")
            page.wait_for_selector("#rate[data-state=ready]", timeout=30_000)
            page.wait_for_function("() => document.querySelector('#rate-image').complete")
            page.mouse.move(5, 400)  # no hover highlight
            written.append(out / "rate.png")
            page.screenshot(path=str(written[-1]))
            page.set_viewport_size(PHONE)
            written.append(out / "rate-phone.png")
            page.screenshot(path=str(written[-1]))

            # The dashboard, signed in.
            page.set_viewport_size(DESKTOP)
            page.goto(f"{url}/admin")
            page.fill("#token", admin_token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/admin")
            page.wait_for_selector("#live[data-loaded=true]", timeout=30_000)
            _wait_images(page)
            written.append(out / "admin.png")
            page.screenshot(path=str(written[-1]), full_page=True)
            page.set_viewport_size(PHONE)
            written.append(out / "admin-phone.png")
            page.screenshot(path=str(written[-1]), full_page=True)
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-medium", help="generator preset served")
    parser.add_argument("--objective", default="color:blue", help="what the simulated users like")
    parser.add_argument("--images", type=int, default=200, help="images per version")
    parser.add_argument("--impressions", type=int, default=50, help="impressions per image")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument(
        "--no-cycle",
        dest="cycle",
        action="store_false",
        help="log traffic only, no learning cycle (the dashboard then shows v1 alone)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go")
    parser.add_argument("--data-dir", type=Path, default=Path("var/screenshots"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium (as root)")

    started = time.monotonic()
    plan = DemoPlan(
        objective=args.objective,
        images=args.images,
        impressions=args.impressions,
        port=args.port,
        data_dir=args.data_dir,
        preset=args.preset,
    )
    check_port_free(plan.port)
    if plan.data_dir.exists():
        shutil.rmtree(plan.data_dir)
    plan.data_dir.mkdir(parents=True)
    admin_token = secrets.token_urlsafe(24)
    env = {**demo_env(plan), "PIRLOOP_ADMIN_TOKEN": admin_token}
    if not args.cycle:
        env["PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE"] = str(10**9)
        env["PIRLOOP_CYCLE_FALLBACK_SECONDS"] = str(10**9)
    url = f"http://127.0.0.1:{plan.port}"
    server = start_server(plan, env)
    try:
        wait_ready(server, url, plan.data_dir / "server.log")
        serving = [
            v
            for v in httpx.get(f"{url}/v1/versions", timeout=10).json()
            if v["status"] == "serving"
        ]
        print(f"serving {args.preset} at {url}: {serving[0] if serving else 'nothing yet'}")
        drive_traffic(plan, url, cycle=args.cycle)
        args.out.mkdir(parents=True, exist_ok=True)
        for path in photograph(url, admin_token, args.out):
            print(f"wrote {path}")
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    print(f"screenshots took {time.monotonic() - started:.0f} s (log: {plan.data_dir}/server.log)")


if __name__ == "__main__":
    main()
