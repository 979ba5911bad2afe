"""The web page at /, in a real browser: Debian's headless Chromium driven by Playwright,
against the app behind a real HTTP server, on a catalog of generated clips and the tiny model.

``make test`` installs Chromium (``scripts/ensure-chromium.sh``); ``SONICSORT_CHROMIUM``
names another Chromium or Chrome binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from .helpers import GENRES, ingest_tagged_library, make_server, serve_catalog, write_clip

ARTISTS = ["Ada", "Ben", "Cy", "Dee"]
N_TRACKS = 24


def chromium_path() -> str:
    for cand in (os.environ.get("SONICSORT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                 shutil.which("google-chrome")):
        if cand and Path(cand).exists():
            return cand
    pytest.fail("no Chromium for the browser tests: run `make test` (it installs Debian's chromium) "
                "or set SONICSORT_CHROMIUM", pytrace=False)


@pytest.fixture(scope="module")
def web(tmp_path_factory, tiny_bundle, redis_url):
    root = tmp_path_factory.mktemp("web")
    home = ingest_tagged_library(root, tiny_bundle, N_TRACKS, seed=900, title="Song", artists=ARTISTS)
    yield from serve_catalog(home, tiny_bundle, redis_url)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(),
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                     "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


class Page:
    """A fresh browser page on the app that records what it asked for and what went wrong."""

    def __init__(self, browser, base: str, **context) -> None:
        self.base = base
        self.ctx = browser.new_context(accept_downloads=True, **context)
        self.ctx.set_default_timeout(20_000)
        self.page = self.ctx.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))

    def open(self, hash_: str = "#/identify"):
        self.page.goto(self.base + "/" + hash_)
        self.page.wait_for_selector("body[data-ready]")
        return self.page

    def check_and_close(self, allowed_errors: tuple[str, ...] = ()) -> None:
        """Nothing but this server was asked for, and no script error happened."""
        origin = urlparse(self.base).netloc
        foreign = [u for u in self.requests if not u.startswith(("blob:", "data:")) and urlparse(u).netloc != origin]
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        self.ctx.close()
        assert not foreign, f"the page reached outside the app: {foreign}"
        assert not errors, errors


@pytest.fixture
def page(browser, web):
    p = Page(browser, web.url)
    yield p
    # a refused request (the error tests) is logged by the browser as a failed resource load
    p.check_and_close(allowed_errors=("status of 4",))


def wait_until(pg, js: str, arg=None, timeout_s: float = 20.0):
    """Poll ``js`` (a function) until it returns something truthy. (Playwright's own waiting
    evaluates strings, which the page's Content-Security-Policy rightly forbids.)"""
    import time

    end = time.monotonic() + timeout_s
    while True:
        out = pg.evaluate(js, arg)
        if out:
            return out
        assert time.monotonic() < end, f"timed out waiting for {js}"
        time.sleep(0.05)


def ids_of(pg, list_sel: str) -> list[int]:
    return [int(i) for i in pg.eval_on_selector_all(f"{list_sel} > li", "els => els.map(e => e.dataset.id)")]


# ---------------------------------------------------------------- identify
def test_upload_shows_the_genre_chart_and_recommendations_with_players(web, page, tmp_path):
    clip = write_clip(tmp_path / "query-clicks.wav", "clicks", seconds=2.0, seed=4242)
    pg = page.open()
    pg.set_input_files("#file", str(clip))
    pg.wait_for_selector("#identify-similar > li")
    api = requests.post(web.url + "/v1/predict", files={"file": ("q.wav", clip.read_bytes(), "audio/wav")}).json()

    genre = pg.text_content("#pred-genre")
    assert genre == api["genre"] and genre in GENRES
    bars = pg.eval_on_selector_all("#pred-chart .bar", "els => els.map(e => [e.dataset.genre, +e.dataset.p])")
    assert sorted(g for g, _ in bars) == sorted(GENRES)
    assert bars[0][0] == genre and sum(p for _, p in bars) == pytest.approx(1.0, abs=1e-3)
    widths = pg.eval_on_selector_all("#pred-chart .bar-fill", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths[0] > widths[-1] and widths == sorted(widths, reverse=True)  # the chart draws the numbers
    # the front end's top tags, in the API's order
    tags = pg.eval_on_selector_all("#pred-tags .tag", "els => els.map(e => e.dataset.tag)")
    assert tags == [t["tag"] for t in api["top_tags"]] and len(tags) == 5

    assert ids_of(pg, "#identify-similar") == [t["id"] for t in api["similar"]] and len(api["similar"]) == 10
    assert pg.locator("#identify-similar .score").count() == 10
    # every recommendation has a player, and the browser decodes what it streams
    srcs = pg.eval_on_selector_all("#identify-similar audio", "els => els.map(e => e.getAttribute('src'))")
    assert len(srcs) == 10 and all(s.endswith("/audio") for s in srcs)
    duration = pg.evaluate("""async () => {
        const a = document.querySelector('#identify-similar audio');
        a.preload = 'auto'; a.load();
        await new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = () => bad(a.error.message); });
        return a.duration; }""")
    assert duration == pytest.approx(2.0, abs=0.05)

    # the same file again is answered from the cache, and the page says so
    assert not pg.is_visible("#pred-cached")
    pg.set_input_files("#file", [])
    pg.select_option("#id-mode", "same")
    pg.set_input_files("#file", str(clip))
    pg.wait_for_selector("#pred-cached", state="visible")
    genres = pg.eval_on_selector_all("#identify-similar > li", "els => els.map(e => e.dataset.genre)")
    assert genres and set(genres) == {genre}


def test_dropping_a_file_works_too(web, page):
    """Drag and drop: the file of a catalog track, dropped on the page, gets that track's genre,
    and the track itself is not among its recommendations."""
    track = requests.get(web.url + "/v1/tracks", params={"limit": 1}).json()["items"][0]
    pg = page.open()
    pg.evaluate("""async (url) => {
        const blob = await (await fetch(url)).blob();
        const dt = new DataTransfer();
        dt.items.add(new File([blob], 'dropped.flac', {type: 'audio/flac'}));
        document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", track["audio_url"])
    pg.wait_for_selector("#identify-similar > li")
    assert pg.text_content("#pred-file") == "dropped.flac"
    assert pg.text_content("#pred-genre") == track["genre"]
    assert track["id"] not in ids_of(pg, "#identify-similar")


def test_a_text_file_gets_a_clear_error(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not music at all\n" * 20)
    fake = tmp_path / "fake.wav"
    fake.write_text("RIFF? no, just text\n" * 20)
    pg = page.open()
    pg.set_input_files("#file", str(notes))
    pg.wait_for_selector("#identify-error", state="visible")
    assert "not audio" in pg.text_content("#identify-error")
    assert pg.is_hidden("#identify-result") and pg.is_hidden("#identify-loading")
    pg.set_input_files("#file", str(fake))  # typed audio/wav, but text: the decoder refuses it
    wait_until(pg, "() => document.querySelector('#identify-error').textContent.includes('not an audio file')")
    assert "Traceback" not in pg.content()


# ---------------------------------------------------------------- browse and a track's neighbours
def test_search_filter_and_open_a_tracks_neighbours(web, page):
    pg = page.open("#/browse")
    pg.wait_for_selector("#browse-list > li")
    assert len(ids_of(pg, "#browse-list")) == N_TRACKS and pg.is_hidden("#browse-more")
    pg.fill("#search-q", "Song 1")
    pg.press("#search-q", "Enter")
    wait_until(pg, "() => document.querySelector('#browse-list').children.length === 11")  # Song 1, 10-19
    titles = pg.eval_on_selector_all("#browse-list .t-title", "els => els.map(e => e.textContent)")
    assert all(t.startswith("Song 1") for t in titles)
    pg.fill("#search-q", "")
    pg.select_option("#search-genre", "chirp")
    wait_until(pg, "() => [...document.querySelectorAll('#browse-list > li')].every(e => e.dataset.genre === 'chirp')")
    chirps = ids_of(pg, "#browse-list")
    expected = [t["id"] for t in requests.get(web.url + "/v1/tracks", params={"genre": "chirp"}).json()["items"]]
    assert chirps == expected and chirps

    pg.click("#browse-list > li:first-child button.similar")
    pg.wait_for_selector("#similar-list > li")
    track = requests.get(web.url + f"/v1/tracks/{chirps[0]}").json()
    assert pg.text_content("#track-title") == track["title"]
    assert pg.locator("#track-chart .bar").count() == len(GENRES)
    shown = pg.eval_on_selector_all("#track-tags .tag", "els => els.map(e => e.dataset.tag)")
    assert shown == [t["tag"] for t in track["top_tags"]]
    near = ids_of(pg, "#similar-list")
    assert len(near) == 10 and chirps[0] not in near
    api = requests.get(web.url + f"/v1/tracks/{chirps[0]}/similar", params={"k": 10}).json()
    assert near == [t["id"] for t in api["items"]]

    def wait_for_new_list(change, param: str):
        # the page's answer for the new setting, then the list drawn from it (a new setting may
        # rank the same tracks alike: the tiny model gives same-genre clips equal scores)
        with pg.expect_response(lambda r: "/similar?" in r.url and param in r.url) as answer:
            change()
        want = [t["id"] for t in answer.value.json()["items"]]
        wait_until(pg, "w => JSON.stringify([...document.querySelectorAll('#similar-list > li')]"
                       ".map(e => +e.dataset.id)) === JSON.stringify(w)", want)

    wait_for_new_list(lambda: pg.select_option("#sim-mode", "same"), "genre_mode=same")
    assert set(pg.eval_on_selector_all("#similar-list > li", "els => els.map(e => e.dataset.genre)")) == {track["genre"]}
    wait_for_new_list(lambda: pg.select_option("#sim-cap", "1"), "artist_cap=1")  # diversity: one track per artist
    artists = pg.eval_on_selector_all("#similar-list > li", "els => els.map(e => e.dataset.artist)")
    assert len(artists) == len(set(artists)) and 1 <= len(artists) <= len(ARTISTS)
    wait_for_new_list(lambda: pg.select_option("#sim-mode", "boost"), "genre_mode=boost")
    api = requests.get(web.url + f"/v1/tracks/{chirps[0]}/similar",
                       params={"k": 10, "genre_mode": "boost", "boost_weight": 0.3, "artist_cap": 1}).json()
    assert ids_of(pg, "#similar-list") == [t["id"] for t in api["items"]]


# ---------------------------------------------------------------- playlists and paths
def test_build_a_playlist_and_download_its_m3u8_then_a_path(web, page):
    pg = page.open("#/browse")
    pg.wait_for_selector("#browse-list > li")
    ids = ids_of(pg, "#browse-list")
    pg.click(f'#browse-list > li[data-id="{ids[0]}"] button.seed')
    pg.click(f'#browse-list > li[data-id="{ids[5]}"] button.seed')
    pg.click(f'#browse-list > li[data-id="{ids[2]}"] button.from')
    pg.click(f'#browse-list > li[data-id="{ids[9]}"] button.to')
    pg.click("nav a[data-view=playlist]")
    pg.wait_for_selector("#seeds > li")
    assert [int(x) for x in pg.eval_on_selector_all("#seeds > li", "els => els.map(e => e.dataset.id)")] == [ids[0], ids[5]]

    pg.fill("#pl-length", "6")
    pg.click("#pl-build")
    pg.wait_for_selector("#playlist-list > li")
    got = ids_of(pg, "#playlist-list")
    api = requests.post(web.url + "/v1/playlists", json={"seeds": [ids[0], ids[5]], "length": 6, "artist_cap": 2}).json()
    assert got == [t["id"] for t in api["items"]] and len(set(got)) == 6
    assert pg.locator("#playlist-list audio").count() == 6

    with pg.expect_download() as dl:
        pg.click("#playlist-download")
    download = dl.value
    assert download.suggested_filename.endswith(".m3u8")
    text = Path(download.path()).read_text()
    urls = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert text.startswith("#EXTM3U") and urls == [f"{web.url}/v1/tracks/{i}/audio" for i in got]
    assert requests.get(urls[0]).headers["Content-Type"].startswith("audio/")

    # the journey between two tracks: starts at one, ends at the other
    assert pg.get_attribute("#path-from", "data-id") == str(ids[2])
    pg.fill("#path-length", "5")
    pg.click("#path-build")
    wait_until(pg, "() => document.querySelector('#playlist-title').textContent.startsWith('Path')")
    path = ids_of(pg, "#playlist-list")
    assert len(path) == 5 and path[0] == ids[2] and path[-1] == ids[9] and len(set(path)) == 5

    # play all: the bottom player plays the list in order
    pg.click("#playlist-play")
    pg.wait_for_selector("#player-bar", state="visible")
    assert pg.get_attribute("#player", "src").endswith(f"/v1/tracks/{path[0]}/audio")
    pg.click("#player-next")
    assert pg.get_attribute("#player", "src").endswith(f"/v1/tracks/{path[1]}/audio")

    # longer than the catalog: every track that fits, and the title says so
    pg.fill("#pl-length", "500")
    pg.click("#pl-build")
    pg.wait_for_selector("#playlist-title:has-text('of 500 asked for')")
    # an impossible request (past the form's own limit) shows the server's message, and the last list stays
    pg.eval_on_selector("#pl-length", "el => el.removeAttribute('max')")
    pg.fill("#pl-length", "5000")
    pg.click("#pl-build")
    pg.wait_for_selector("#playlist-error", state="visible")
    assert "length" in pg.text_content("#playlist-error")


# ---------------------------------------------------------------- the map
def test_the_map_renders_and_a_click_plays_and_shows_neighbours(web, page):
    pg = page.open("#/map")
    pg.wait_for_selector("#map-legend > li")
    assert pg.get_attribute("#map", "data-points") == str(N_TRACKS)
    legend = pg.eval_on_selector_all("#map-legend label", "els => els.map(e => e.textContent.trim().split(' ')[0])")
    assert sorted(legend) == sorted({p["genre"] for p in requests.get(web.url + "/v1/map").json()["points"]})

    def painted() -> int:
        return pg.evaluate("""() => { const c = document.querySelector('#map');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")

    dots = painted()
    # points are discs of a few pixels; the tiny test model puts same-genre clips nearly on top
    # of one another, so count per genre: each one draws, and switched off it disappears
    assert dots > len(legend) * 10
    boxes = pg.locator("#map-legend input")
    for i in range(boxes.count()):
        boxes.nth(i).uncheck()
        assert painted() < dots
        boxes.nth(i).check()
    assert painted() == dots

    box = pg.locator("#map").bounding_box()
    point = requests.get(web.url + "/v1/map").json()["points"]
    x, y = pg.evaluate("window.sonicsortMapPoint(0)")
    pg.mouse.move(box["x"] + x, box["y"] + y)
    pg.wait_for_selector("#map-tip", state="visible")
    tip = pg.text_content("#map-tip")
    # the nearest point to the mouse is point 0, unless another lies on top of it
    assert any(p["title"] in tip for p in point)
    pg.mouse.click(box["x"] + x, box["y"] + y)
    pg.wait_for_selector("#map-neighbours > li")
    picked = pg.get_attribute("#map-pick-open", "href").rsplit("/", 1)[1]
    assert pg.text_content("#map-pick-title") in tip
    assert pg.get_attribute("#player", "src").endswith(f"/v1/tracks/{picked}/audio")
    api = requests.get(web.url + f"/v1/tracks/{picked}/similar", params={"k": 8}).json()
    assert ids_of(pg, "#map-neighbours") == [t["id"] for t in api["items"]]


# ---------------------------------------------------------------- phone width, start-up, no outside assets
def test_every_view_fits_a_phone_screen(browser, web, tmp_path):
    p = Page(browser, web.url, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    pg = p.open()
    clip = write_clip(tmp_path / "phone.flac", "drone", seconds=2.0, seed=77)
    pg.set_input_files("#file", str(clip))
    pg.wait_for_selector("#identify-similar > li")

    def fits(view: str) -> None:
        sizes = pg.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert sizes[0] <= sizes[1], f"{view} scrolls sideways on a phone: {sizes}"

    fits("identify")
    for view, ready in (("#/browse", "#browse-list > li"), ("#/playlist", "#pick-list > li"),
                        ("#/map", "#map-legend > li")):
        pg.goto(web.url + "/" + view)
        pg.wait_for_selector(ready)
        fits(view)
    assert 300 < pg.locator("#map").bounding_box()["width"] <= 375  # the map takes the screen's width
    first = requests.get(web.url + "/v1/tracks", params={"limit": 1}).json()["items"][0]["id"]
    pg.goto(web.url + f"/#/track/{first}")
    pg.wait_for_selector("#similar-list > li")
    fits("track")
    p.check_and_close()


def test_a_starting_service_says_so_then_the_page_works(browser, web, tiny_bundle):
    srv = make_server(web.service.settings.home, tiny_bundle, None, start="no")
    p = Page(browser, srv.url)
    try:
        pg = p.page
        pg.goto(srv.url + "/")
        pg.wait_for_selector("#banner", state="visible")
        assert "starting" in pg.text_content("#banner")
        srv.service.start(background=False)
        pg.wait_for_selector("body[data-ready]")
        assert pg.is_hidden("#banner")
        assert pg.locator("#search-genre option").count() == len(GENRES) + 1
    finally:
        p.check_and_close(allowed_errors=("status of 503",))  # /readyz while starting
        srv.close()


def test_the_page_and_its_assets_come_from_the_app(web):
    r = requests.get(web.url + "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp  # the browser refuses anything else
    assert "http://" not in r.text and "https://" not in r.text
    for asset, ctype in (("/ui/app.js", "javascript"), ("/ui/app.css", "text/css"), ("/ui/favicon.svg", "image/svg")):
        a = requests.get(web.url + asset)
        assert a.status_code == 200 and ctype in a.headers["Content-Type"], asset
        assert "https://" not in a.text and "http://" not in a.text.replace("http://www.w3.org/2000/svg", "")
        assert a.headers["X-Content-Type-Options"] == "nosniff", asset
    same = requests.get(web.url + "/ui/index.html")  # the page under its static path: the same protection
    assert same.status_code == 200 and same.headers["Content-Security-Policy"] == csp
    assert r.headers["X-Content-Type-Options"] == same.headers["X-Content-Type-Options"] == "nosniff"
    for url in ("/v1/genres", "/v1/tracks/999999", "/openapi.json"):  # JSON and problem+json alike
        assert requests.get(web.url + url).headers["X-Content-Type-Options"] == "nosniff", url


def test_saved_playlists_and_how_to_connect_an_app(web, page):
    """A user's public playlist (made in a Subsonic app) is listed with its M3U8; the panel says
    which URL an app connects to and how a user is added."""
    cat = web.service.catalog
    web.service.users.add("dana", "dana-pass")
    ids = cat.ids().tolist()
    pid = cat.create_playlist("dana", "Morning mix", ids[:3], public=True)
    cat.create_playlist("dana", "Private one", ids[:2])
    try:
        pg = page.open("#/playlist")
        pg.wait_for_selector("#saved-list > li")
        assert pg.eval_on_selector_all("#saved-list > li a", "els => els.map(e => e.textContent)") == ["Morning mix"]
        assert pg.get_attribute("#saved-list > li a", "href") == f"/v1/saved-playlists/{pid}?format=m3u8"
        assert pg.text_content("#connect-url") == web.url
        assert "sonicsort users add" in pg.text_content("#connect")
    finally:
        cat.delete_user("dana")


# ---------------------------------------------------------------- listening: alchemy, flow, continue, plays, artists
def test_alchemy_flow_continue_plays_and_similar_artists(web, page):
    if "listener" not in {u.name for u in web.service.catalog.users()}:
        web.service.users.add("listener", "listener-password")
    pg = page.open("#/browse")
    pg.wait_for_selector("#browse-list > li")
    ids = ids_of(pg, "#browse-list")
    pg.click(f'#browse-list > li[data-id="{ids[0]}"] button.alchemy-add')
    pg.click(f'#browse-list > li[data-id="{ids[3]}"] button.alchemy-add')
    pg.click(f'#browse-list > li[data-id="{ids[1]}"] button.alchemy-subtract')
    pg.click(f'#browse-list > li[data-id="{ids[2]}"] button.seed')
    pg.click("nav a[data-view=playlist]")
    pg.wait_for_selector("#alchemy-add > span")
    pg.click("#alchemy-build")
    wait_until(pg, "() => document.querySelector('#playlist-title').textContent.startsWith('Alchemy')")
    got = ids_of(pg, "#playlist-list")
    api = requests.post(web.url + "/v1/alchemy", json={"add": [ids[0], ids[3]], "subtract": [ids[1]],
                                                        "count": 10}).json()
    assert got == [t["id"] for t in api["items"]] and not set(got) & {ids[0], ids[1], ids[3]}
    assert pg.is_hidden("#playlist-download")  # no M3U8 for an alchemy mix

    # Flow: the server's flowing order of the same playlist
    pg.check("#pl-flow")
    pg.fill("#pl-length", "8")
    pg.click("#pl-build")
    wait_until(pg, "() => document.querySelector('#playlist-title').textContent.startsWith('Playlist')")
    flow = ids_of(pg, "#playlist-list")
    want = requests.post(web.url + "/v1/playlists", json={"seeds": [ids[2]], "length": 8, "artist_cap": 2,
                                                           "order": "flow"}).json()
    assert flow == [t["id"] for t in want["items"]] and flow[0] == ids[2]

    # a play counts for the listener named on the page; Continue adds what follows the queue
    pg.fill("#listener", "listener")
    pg.press("#listener", "Tab")
    pg.click("#playlist-play")
    pg.wait_for_selector("#player-bar", state="visible")
    assert pg.get_attribute("#player-bar", "data-queue") == str(len(flow))
    wait_until(pg, "() => document.querySelector('#player-bar').dataset.played")
    assert flow[0] in [t for t, _ in web.service.catalog.plays_of("listener")]
    pg.click("#player-continue")
    wait_until(pg, "n => Number(document.querySelector('#player-bar').dataset.queue) === n + 10", len(flow))

    # an artist's page shows the artists that sound like them, as the API ranks them
    pg.goto(f"{web.url}/#/track/{ids[0]}")
    pg.wait_for_selector("#similar-artists > li")
    shown = pg.eval_on_selector_all("#similar-artists > li", "els => els.map(e => e.dataset.id)")
    artist = requests.get(f"{web.url}/v1/tracks/{ids[0]}").json()["artist_id"]
    ranked = requests.get(f"{web.url}/v1/artists/{artist}/similar", params={"count": 6}).json()["items"]
    assert shown == [a["id"] for a in ranked] and artist not in shown
