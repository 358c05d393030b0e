"""``make screenshots``: a PNG of each UI page for the sample store (``build.py``), taken
in Debian's Chromium through Playwright: ``python examples/ui_sample/screenshots.py DIR``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from build import build
from playwright.sync_api import sync_playwright

from trellis.cli.stores import open_existing_store
from trellis.ui import UiSettings
from trellis.ui.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _shrink(png: Path) -> None:
    """Re-encode with a 256-colour palette when Pillow is there (a third of the size, and
    these pages have few colours)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp()) / "sample.db"
    ids = build(store)
    settings = UiSettings(
        open_store=lambda: open_existing_store(str(store)), store_url="sample.db", token="x"
    )
    pages = {
        "runs": "/",
        "batch": f"/runs/{ids['batch']}",
        "run": f"/runs/{ids['cascade_llm']}",
        "failed": f"/runs/{ids['failed']}",
        "waiting": f"/runs/{ids['waiting']}?token=x",
        "compare": f"/compare?a={ids['cascade']}&b={ids['cascade_llm']}",
    }
    with BackgroundServer(settings) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        for name, path in pages.items():
            page.goto(url + path)
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            _shrink(target)
            print(f"{target} ({target.stat().st_size // 1024} KB)")
        # Steps opened: an LLM step's attempts, each with the prompt it sent and the
        # reply; an agent's tool-call transcript, a tool that raised with its traceback.
        for name, run, step_name, prompts in (
            ("step", ids["cascade_llm"], "llm_review", True),
            ("agent", ids["agent"], "answer", False),
        ):
            page.goto(url + f"/runs/{run}")
            step = page.locator(f"#step-{step_name}")
            step.locator("summary").first.click()
            if prompts:
                for summary in step.locator("details.convo > summary").all():
                    summary.click()
            target = out / f"{name}.png"
            step.screenshot(path=str(target))
            _shrink(target)
            print(f"{target} ({target.stat().st_size // 1024} KB)")
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
