"""Screenshots of the web page's main views, for the README, from a running sonicsort.

    python scripts/screenshots.py --url http://127.0.0.1:8000 --clip some.flac --out docs/screenshots

Drives Debian's Chromium (``/usr/bin/chromium``, or ``--chromium``) with Playwright: identify
an uploaded clip, browse, a track with its neighbours, a playlist, the map, and the identify
view at phone width. The clip is uploaded to ``/v1/predict`` only (not added to the catalog).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    ap.add_argument("--clip", required=True, type=Path, help="an audio file to identify")
    ap.add_argument("--out", default=Path("docs/screenshots"), type=Path, help="folder for the PNGs")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--search", default="", help="text for the browse view's search")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 960}, device_scale_factor=1)
        page.goto(args.url + "/#/identify")
        page.wait_for_selector("body[data-ready]")
        page.set_input_files("#file", str(args.clip))
        page.wait_for_selector("#identify-similar li")
        page.screenshot(path=str(args.out / "identify.png"))

        page.goto(args.url + "/#/browse")
        if args.search:
            page.fill("#search-q", args.search)
            page.click("#search-form button")
        page.wait_for_selector("#browse-list li")
        page.screenshot(path=str(args.out / "browse.png"))

        first = page.get_attribute("#browse-list li", "data-id")
        page.goto(args.url + f"/#/track/{first}")
        page.wait_for_selector("#similar-list li")
        page.select_option("#sim-mode", "boost")
        page.select_option("#sim-cap", "1")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(args.out / "track.png"))

        ids = page.eval_on_selector_all("#similar-list li", "els => els.map(e => e.dataset.id)")
        page.click("#track-seed")
        page.click(f'#similar-list li[data-id="{ids[3]}"] button.seed')
        page.goto(args.url + "/#/playlist")
        page.fill("#pl-length", "8")
        page.click("#pl-build")
        page.wait_for_selector("#playlist-list li")
        page.screenshot(path=str(args.out / "playlist.png"))

        page.goto(args.url + "/#/map")
        page.wait_for_selector("#map-legend li")
        box = page.locator("#map").bounding_box()
        pt = page.evaluate("() => { const p = window.sonicsortMapPoint(0); return p; }")
        page.mouse.move(box["x"] + pt[0], box["y"] + pt[1])
        page.mouse.click(box["x"] + pt[0], box["y"] + pt[1])
        page.wait_for_selector("#map-neighbours li")
        page.mouse.move(box["x"] + pt[0] + 1, box["y"] + pt[1])
        page.screenshot(path=str(args.out / "map.png"))

        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        phone.goto(args.url + "/#/identify")
        phone.wait_for_selector("body[data-ready]")
        phone.set_input_files("#file", str(args.clip))
        phone.wait_for_selector("#identify-similar li")
        phone.screenshot(path=str(args.out / "phone.png"))
        browser.close()
    for p in sorted(args.out.glob("*.png")):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
