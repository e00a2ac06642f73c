"""Screenshot of the MLflow UI showing a job's trial runs with their Pareto tags (headless Chromium).

    .venv/bin/python scripts/mlflow_screenshot.py --workdir runs --job demo --out docs/mlflow-ui.png

Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (no browser download).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from playwright.sync_api import sync_playwright

PORT = 5057


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="runs")
    parser.add_argument("--job", default="demo")
    parser.add_argument("--out", default="docs/mlflow-ui.png")
    parser.add_argument("--columns", default="kl,raspberry-pi-5.decode_ms_per_token,autocompress.pareto")
    args = parser.parse_args()
    uri = f"sqlite:///{Path(args.workdir).resolve() / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name(args.job).experiment_id
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1)
                break
            except OSError:
                time.sleep(1)
        query = urllib.parse.quote('tags.`autocompress.role` = "trial"')
        url = f"http://127.0.0.1:{PORT}/#/experiments/{experiment}/runs?searchFilter={query}"
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(url)
            page.wait_for_timeout(6000)
            for label in ("Close", "Got it"):  # side panels and first-visit tips
                for button in page.get_by_role("button", name=label).all():
                    if button.is_visible():
                        button.click()
            name_cell = page.locator("[col-id='attributes.`Run Name`'][role='gridcell']").first
            name_cell.locator("button, [role='button'], svg").first.click()  # expand the job run's trials
            page.wait_for_timeout(1500)
            page.get_by_text("Show more columns").first.click()  # add the metrics and the Pareto tag
            page.wait_for_timeout(1000)
            for column in args.columns.split(","):
                page.get_by_text(column, exact=True).first.click()
            page.keyboard.press("Escape")
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.terminate()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
