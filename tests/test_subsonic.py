"""OpenSubsonic at /rest: every method over HTTP in JSON and XML, each JSON answer validated against
the specification's own OpenAPI schemas, and the same methods driven by py-sonic, a real client."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET

import pytest

from .helpers import GENRES, serve_catalog, write_clip
from .helpers.opensubsonic import validate

NS = "{http://subsonic.org/restapi}"
USERS = {"alice": "wonder land", "bob": "b0b-pass"}
# title, artist, album artist, album, track, year, genre tag
TAGGED = [("Alpha", "The Blips", "The Blips", "First", "1", "2001", "Shoegaze"),
          ("Beta", "The Blips", None, "First", "2/2", "2001-03-04", None),
          ("Gamma", "Guest Singer", "The Blips", "Second", "1", "2005", None),
          ("Delta", "Zed", None, "Zulu", "1", None, None),
          ("Zeta", "Zed", None, "Zulu", "2", None, None),
          ("Epsilon", None, None, None, None, None, None)]


def _png(colour, side=40) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def rest(tmp_path_factory, tiny_bundle, redis_url):
    import mutagen
    from mutagen.flac import Picture

    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library

    root = tmp_path_factory.mktemp("subsonic")
    for i, (title, artist, album_artist, album, track, year, genre) in enumerate(TAGGED):
        p = write_clip(root / "music" / f"{i:02d}.flac", GENRES[i % 3], seconds=2.0, seed=70 + i)
        f = mutagen.File(p, easy=True)
        f["title"] = title
        for key, value in (("artist", artist), ("albumartist", album_artist), ("album", album),
                           ("tracknumber", track), ("date", year), ("genre", genre)):
            if value:
                f[key] = value
        f.save()
        if title == "Beta":
            flac = mutagen.File(p)
            pic = Picture()
            pic.type, pic.mime, pic.data = 3, "image/png", _png((200, 10, 10))
            flac.add_picture(pic)
            flac.save()
    lib = Library(Settings(home=root / "home"), bundle=tiny_bundle, cache=PredictionCache(None))
    assert ingest(lib, [root / "music"], workers=0).added == len(TAGGED)
    lib.close()
    for srv in serve_catalog(root / "home", tiny_bundle, redis_url):
        srv.no_users = srv.get("/rest/ping", params={"u": "alice", "p": "x", "f": "json"}).json()
        srv.service.users.add("alice", USERS["alice"], admin=True)
        srv.service.users.add("bob", USERS["bob"])
        srv.root = root
        yield srv


def login(user="alice", **extra):
    salt = "s4lt" + user
    return {"u": user, "t": hashlib.md5((USERS[user] + salt).encode()).hexdigest(), "s": salt, "v": "1.16.1",
            "c": "tests", **extra}


def call(srv, method, *, fmt="json", user="alice", post=False, auth=True, **params):
    """One method in JSON (validated against the spec's schema) or XML (parsed); returns the answer."""
    q = {**(login(user) if auth else {}), "f": fmt, **params}
    r = srv.post(f"/rest/{method}", data=q) if post else srv.get(f"/rest/{method}.view", params=q)
    assert r.status_code == 200, r.text
    if fmt == "xml":
        assert r.headers["Content-Type"].startswith("application/xml")
        root = ET.fromstring(r.content)
        assert root.tag == NS + "subsonic-response" and root.get("openSubsonic") == "true"
        return root
    body = r.json()
    validate(method, body)
    return body["subsonic-response"]


def ok(srv, method, **kw):
    out = call(srv, method, **kw)
    status = out.get("status") if isinstance(out, dict) else out.get("status")
    assert status == "ok", out.get("error") if isinstance(out, dict) else ET.tostring(out)
    return out


def error_code(srv, method, **kw) -> int:
    out = call(srv, method, **kw)
    if isinstance(out, dict):
        assert out["status"] == "failed"
        return out["error"]["code"]
    assert out.get("status") == "failed"
    return int(out.find(NS + "error").get("code"))


def ids_by_title(srv) -> dict[str, str]:
    songs = ok(srv, "search3", query="", songCount=100, artistCount=0, albumCount=0)["searchResult3"]["song"]
    return {s["title"]: s["id"] for s in songs}


def artist_id(srv, name: str) -> str:
    idx = ok(srv, "getArtists")["artists"]["index"]
    return next(a["id"] for i in idx for a in i["artist"] if a["name"] == name)


def album_id(srv, name: str) -> str:
    albums = ok(srv, "getAlbumList2", type="alphabeticalByName", size=50)["albumList2"]["album"]
    return next(a["id"] for a in albums if a["name"] == name)


# ---------------------------------------------------------------- the protocol and logins
def test_a_server_without_users_refuses_and_says_how_to_add_one(rest):
    assert rest.no_users["subsonic-response"]["error"]["code"] == 40
    assert "sonicsort users add" in rest.no_users["subsonic-response"]["error"]["message"]
    validate("ping", rest.no_users)


def test_every_login_the_spec_names_and_its_errors(rest):
    plain = {"u": "bob", "p": USERS["bob"], "f": "json"}
    assert rest.get("/rest/ping", params=plain).json()["subsonic-response"]["status"] == "ok"
    enc = {"u": "bob", "p": "enc:" + USERS["bob"].encode().hex(), "f": "json"}
    assert rest.post("/rest/ping.view", data=enc).json()["subsonic-response"]["status"] == "ok"  # formPost
    body = ok(rest, "ping", fmt="json", user="bob")
    assert body["version"] == "1.16.1" and body["type"] == "sonicsort" and body["openSubsonic"] is True
    key = rest.service.users.new_api_key("bob")
    assert rest.get("/rest/ping", params={"apiKey": key, "f": "json"}).json()["subsonic-response"]["status"] == "ok"

    def code(params):
        body = rest.get("/rest/ping", params={"f": "json", **params}).json()
        validate("ping", body)
        return body["subsonic-response"]["error"]["code"]

    assert code({"u": "bob", "p": "wrong"}) == 40
    assert code({"u": "bob", "t": "0" * 32, "s": "abcdef"}) == 40
    assert code({"u": "nobody", "p": "x"}) == 40
    assert code({"apiKey": key, "u": "bob"}) == 43
    assert code({"u": "bob", "p": USERS["bob"], "t": "x", "s": "y"}) == 43
    assert code({"apiKey": "not-a-key"}) == 44
    assert code({"p": "x"}) == 10
    assert code({"u": "bob"}) == 10
    # the extensions are public; XML is the default format, with the Subsonic namespace
    assert call(rest, "getOpenSubsonicExtensions", auth=False)["openSubsonicExtensions"]
    root = ET.fromstring(rest.get("/rest/ping", params=login("bob")).content)
    assert root.tag == NS + "subsonic-response" and root.get("status") == "ok"
    assert rest.get("/rest/ping", params=login("bob", f="jsonp", callback="cb")).text.startswith("cb({")


def test_failed_logins_are_limited_per_user_and_address(rest):
    rest.service.users.add("carol", "right-one")
    for _ in range(10):
        assert rest.get("/rest/ping", params={"u": "carol", "p": "wrong", "f": "json"}).json()[
            "subsonic-response"]["error"]["code"] == 40
    refused = rest.get("/rest/ping", params={"u": "carol", "p": "right-one", "f": "json"}).json()["subsonic-response"]
    assert refused["error"]["code"] == 40 and "too many failed logins" in refused["error"]["message"]
    assert ok(rest, "ping", user="bob")  # others from the same address still log in


# ---------------------------------------------------------------- browsing
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_browsing_by_tags(rest, fmt):
    for m in ("ping", "getLicense", "getMusicFolders", "getIndexes", "getArtists", "getGenres"):
        ok(rest, m, fmt=fmt)
    blips = artist_id(rest, "The Blips")
    first, zulu = album_id(rest, "First"), album_id(rest, "Zulu")
    ids = ids_by_title(rest)
    for m, params in (("getArtist", {"id": blips}), ("getAlbum", {"id": first}), ("getSong", {"id": ids["Alpha"]}),
                      ("getMusicDirectory", {"id": blips}), ("getMusicDirectory", {"id": zulu}),
                      ("getSongsByGenre", {"genre": "Shoegaze"}), ("getRandomSongs", {"size": 3}),
                      ("search3", {"query": "zed"})):
        ok(rest, m, fmt=fmt, **params)
    for kind in ("random", "newest", "alphabeticalByName", "alphabeticalByArtist", "frequent", "recent", "starred",
                 "highest"):
        ok(rest, "getAlbumList2", fmt=fmt, type=kind)
    ok(rest, "getAlbumList2", fmt=fmt, type="byYear", fromYear=2000, toYear=2003)
    ok(rest, "getAlbumList2", fmt=fmt, type="byGenre", genre="Shoegaze")


def test_artists_albums_and_songs_come_from_the_tags(rest):
    index = ok(rest, "getArtists")["artists"]
    by_letter = {i["name"]: [a["name"] for a in i["artist"]] for i in index["index"]}
    assert "The Blips" in by_letter["B"] and by_letter["Z"] == ["Zed"] and "Unknown Artist" in by_letter["U"]
    blips = ok(rest, "getArtist", id=artist_id(rest, "The Blips"))["artist"]
    assert [a["name"] for a in blips["album"]] == ["First", "Second"] and blips["albumCount"] == 2
    album = ok(rest, "getAlbum", id=album_id(rest, "First"))["album"]
    assert [s["title"] for s in album["song"]] == ["Alpha", "Beta"] and album["year"] == 2001
    alpha, beta = album["song"]
    assert alpha["track"] == 1 and beta["track"] == 2 and beta["year"] == 2001
    assert alpha["genre"] == "Shoegaze"  # the file's genre tag ...
    assert beta["genre"] in GENRES  # ... else the predicted genre
    assert alpha["suffix"] == "flac" and alpha["contentType"] == "audio/flac" and alpha["size"] > 0
    assert "path" not in alpha and alpha["bitRate"] > 0
    # a guest on the album artist's album is the song's artist; the album stays the album artist's
    gamma = ok(rest, "getAlbum", id=album_id(rest, "Second"))["album"]["song"][0]
    assert gamma["artist"] == "Guest Singer" and gamma["artistId"] == blips["id"]
    genres = {g["value"]: g for g in ok(rest, "getGenres")["genres"]["genre"]}
    assert genres["Shoegaze"]["songCount"] == 1 and genres["Shoegaze"]["albumCount"] == 1
    assert [s["title"] for s in ok(rest, "getSongsByGenre", genre="shoegaze")["songsByGenre"]["song"]] == ["Alpha"]
    found = ok(rest, "search3", query="bli")["searchResult3"]
    assert [a["name"] for a in found["artist"]] == ["The Blips"] and {s["title"] for s in found["song"]} >= {"Alpha"}
    assert len(ok(rest, "getRandomSongs", size=4)["randomSongs"]["song"]) == 4
    years = ok(rest, "getAlbumList2", type="byYear", fromYear=2004, toYear=2010)["albumList2"]["album"]
    assert [a["name"] for a in years] == ["Second"]
    folder = ok(rest, "getMusicDirectory", id=artist_id(rest, "The Blips"))["directory"]
    assert [c["title"] for c in folder["child"]] == ["First", "Second"] and all(c["isDir"] for c in folder["child"])
    # the XML answer carries the same facts as attributes, a genre's name as its text
    root = call(rest, "getGenres", fmt="xml")
    assert {g.text for g in root.iter(NS + "genre")} >= {"Shoegaze"}


def test_cover_art_embedded_resized_or_generated(rest):
    from PIL import Image

    ids = ids_by_title(rest)
    r = rest.get("/rest/getCoverArt", params=login(id=ids["Beta"]))
    assert r.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(r.content)).size == (40, 40)
    small = rest.get("/rest/getCoverArt", params=login(id=album_id(rest, "First"), size=16))  # its songs' picture
    img = Image.open(io.BytesIO(small.content))
    assert img.size == (16, 16) and img.convert("RGB").getpixel((8, 8))[0] > 150
    made = rest.get("/rest/getCoverArt", params=login(id=album_id(rest, "Zulu"), size=64))
    assert made.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(made.content)).size == (64, 64)
    assert error_code(rest, "getCoverArt", id="al-000000000000") == 70


def test_stream_and_download_serve_the_file_with_ranges(rest):
    ids = ids_by_title(rest)
    whole = (rest.root / "music" / "00.flac").read_bytes()
    r = rest.get("/rest/stream", params=login(id=ids["Alpha"]))
    assert r.status_code == 200 and r.content == whole and r.headers["Content-Type"] == "audio/flac"
    part = rest.get("/rest/stream", params=login(id=ids["Alpha"]), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    raw = rest.get("/rest/stream", params=login(id=ids["Alpha"], format="mp3", maxBitRate=128))
    assert raw.content == whole and raw.headers["Content-Type"] == "audio/flac"  # no transcoding: the file as it is
    dl = rest.get("/rest/download", params=login(id=ids["Alpha"]))
    assert dl.content == whole and "attachment" in dl.headers["Content-Disposition"]
    assert error_code(rest, "stream", id="999999") == 70 and error_code(rest, "stream") == 10


# ---------------------------------------------------------------- listening
def test_plays_stars_and_ratings_are_each_users_own(rest):
    ids = ids_by_title(rest)
    ok(rest, "scrobble", id=ids["Delta"], user="bob")
    ok(rest, "scrobble", post=True, id=[ids["Zeta"], ids["Zeta"]], time=[1_700_000_000_000, 1_700_000_100_000],
       user="bob")
    ok(rest, "scrobble", id=ids["Delta"], submission="false", user="bob")  # "now playing": not a play
    top = ok(rest, "getTopSongs", artist="zed", user="bob")["topSongs"]["song"]
    assert [s["title"] for s in top] == ["Zeta", "Delta"] and top[0]["playCount"] == 2
    frequent = ok(rest, "getAlbumList2", type="frequent", user="bob")["albumList2"]["album"]
    assert frequent[0]["name"] == "Zulu"
    ok(rest, "star", id=ids["Gamma"], albumId=album_id(rest, "Zulu"), artistId=artist_id(rest, "Zed"), user="bob")
    starred = ok(rest, "getStarred2", user="bob")["starred2"]
    assert [s["title"] for s in starred["song"]] == ["Gamma"] and [a["name"] for a in starred["album"]] == ["Zulu"]
    assert [a["name"] for a in starred["artist"]] == ["Zed"]
    assert ok(rest, "getStarred2", user="alice")["starred2"]["song"] == []
    ok(rest, "unstar", id=ids["Gamma"], user="bob")
    assert ok(rest, "getStarred2", user="bob")["starred2"]["song"] == []
    ok(rest, "setRating", id=ids["Gamma"], rating=4, user="bob")
    assert ok(rest, "getSong", id=ids["Gamma"], user="bob")["song"]["userRating"] == 4
    assert "userRating" not in ok(rest, "getSong", id=ids["Gamma"])["song"]
    assert error_code(rest, "setRating", id=ids["Gamma"], rating=9) == 0
    assert error_code(rest, "scrobble", id="123456789") == 70


def test_playlists_per_user_with_their_rights(rest):
    ids = ids_by_title(rest)
    made = ok(rest, "createPlaylist", post=True, name="Road trip", songId=[ids["Alpha"], ids["Delta"]])["playlist"]
    pid = made["id"]
    assert made["owner"] == "alice" and [e["title"] for e in made["entry"]] == ["Alpha", "Delta"]
    ok(rest, "updatePlaylist", playlistId=pid, songIdToAdd=ids["Zeta"], songIndexToRemove=0, comment="for the car")
    got = ok(rest, "getPlaylist", id=pid)["playlist"]
    assert [e["title"] for e in got["entry"]] == ["Delta", "Zeta"] and got["comment"] == "for the car"
    replaced = ok(rest, "createPlaylist", playlistId=pid, songId=[ids["Beta"]])["playlist"]  # the update form
    assert [e["title"] for e in replaced["entry"]] == ["Beta"]
    assert error_code(rest, "getPlaylist", id=pid, user="bob") == 70  # private: not there for bob
    assert rest.get("/v1/saved-playlists").json()["items"] == []
    assert rest.get(f"/v1/saved-playlists/{pid}").status_code == 404
    ok(rest, "updatePlaylist", playlistId=pid, public="true")
    assert [p["name"] for p in ok(rest, "getPlaylists", user="bob")["playlists"]["playlist"]] == ["Road trip"]
    # /v1 shows the public playlists (private ones only with the server's API key), in JSON and M3U8
    listed = rest.get("/v1/saved-playlists").json()["items"]
    assert [(p["name"], p["owner"], p["n_tracks"]) for p in listed] == [("Road trip", "alice", 1)]
    one = rest.get(f"/v1/saved-playlists/{pid}").json()
    assert [t["title"] for t in one["items"]] == ["Beta"] and "path" not in one["items"][0]
    assert "Beta" in rest.get(f"/v1/saved-playlists/{pid}", params={"format": "m3u8"}).text
    assert error_code(rest, "deletePlaylist", id=pid, user="bob") == 50  # public, but alice's
    assert error_code(rest, "getPlaylists", username="alice", user="bob") == 50
    mine = ok(rest, "createPlaylist", name="Bob's", songId=ids["Gamma"], user="bob")["playlist"]["id"]
    ok(rest, "deletePlaylist", id=mine, user="alice")  # an admin may
    assert error_code(rest, "getPlaylist", id=mine, user="bob") == 70
    ok(rest, "deletePlaylist", id=pid)
    assert error_code(rest, "createPlaylist", songId=ids["Alpha"]) == 10


# ---------------------------------------------------------------- sonic recommendations
def test_sonic_similarity_and_paths_from_the_embedding(rest):
    ids = ids_by_title(rest)
    matches = ok(rest, "getSonicSimilarTracks", id=ids["Alpha"], count=3)["sonicMatch"]
    assert len(matches) == 3 and ids["Alpha"] not in [m["entry"]["id"] for m in matches]
    sims = [m["similarity"] for m in matches]
    assert all(0 <= s <= 1 for s in sims) and sims == sorted(sims, reverse=True)
    path = ok(rest, "findSonicPath", startSongId=ids["Alpha"], endSongId=ids["Zeta"], count=4)["sonicMatch"]
    assert path[0]["entry"]["id"] == ids["Alpha"] and path[-1]["entry"]["id"] == ids["Zeta"] and len(path) == 4
    assert path[0]["similarity"] == 1.0
    for key in (ids["Alpha"], album_id(rest, "First"), artist_id(rest, "The Blips")):
        songs = ok(rest, "getSimilarSongs", id=key, count=2)["similarSongs"]["song"]
        assert 0 < len(songs) <= 2 and ids["Alpha"] not in [s["id"] for s in songs]
    songs = ok(rest, "getSimilarSongs2", id=artist_id(rest, "Zed"), count=3)["similarSongs2"]["song"]
    assert songs and not {s["title"] for s in songs} & {"Delta", "Zeta"}
    root = call(rest, "getSonicSimilarTracks", fmt="xml", id=ids["Alpha"], count=2)
    assert len(root.findall(f"{NS}sonicMatch/{NS}entry")) == 2


def test_bad_input_gets_the_specs_codes(rest):
    ids = ids_by_title(rest)
    assert error_code(rest, "getSong") == 10
    assert error_code(rest, "getSong", id="98765") == 70 and error_code(rest, "getSong", id="nonsense") == 70
    assert error_code(rest, "getAlbum", id="al-nope") == 70 and error_code(rest, "getArtist", fmt="xml", id="x") == 70
    assert error_code(rest, "getSonicSimilarTracks", id=ids["Alpha"], count=-1) == 0
    assert error_code(rest, "getAlbumList2", type="sideways") == 0
    assert error_code(rest, "findSonicPath", startSongId=ids["Alpha"]) == 10
    body = rest.get("/rest/jukeboxControl", params=login(f="json")).json()["subsonic-response"]
    assert body["status"] == "failed" and body["error"]["code"] == 0
    # a track deleted through /v1: its song id is gone from /rest too
    up = rest.post("/v1/tracks", files={"file": ("x.wav", write_clip(rest.root / "up.wav", "chirp", 2.0, 91).read_bytes())})
    assert up.status_code == 201
    tid = str(up.json()["id"])
    assert ok(rest, "getSong", id=tid)["song"]["title"]
    assert rest.delete(f"/v1/tracks/{tid}").status_code == 204
    assert error_code(rest, "getSong", id=tid) == 70 and error_code(rest, "getSonicSimilarTracks", id=tid) == 70


# ---------------------------------------------------------------- a real client
def test_py_sonic_drives_the_server(rest):
    import libsonic

    host, port = rest.url.rsplit(":", 1)
    conn = libsonic.Connection(host, "alice", USERS["alice"], port=int(port), serverPath="/rest", appName="py-sonic")
    assert conn.ping() and conn.getLicense()["license"]["valid"]
    artists = conn.getArtists()["artists"]["index"]
    blips = next(a for i in artists for a in i["artist"] if a["name"] == "The Blips")
    first = conn.getArtist(blips["id"])["artist"]["album"][0]
    songs = conn.getAlbum(first["id"])["album"]["song"]
    assert [s["title"] for s in songs] == ["Alpha", "Beta"]
    assert conn.getSong(songs[0]["id"])["song"]["title"] == "Alpha"
    assert conn.getIndexes()["indexes"]["index"] and conn.getMusicDirectory(first["id"])["directory"]["child"]
    assert conn.getMusicFolders()["musicFolders"]["musicFolder"]
    assert conn.getGenres()["genres"]["genre"] and conn.getSongsByGenre("Shoegaze")["songsByGenre"]["song"]
    assert len(conn.getRandomSongs(size=2)["randomSongs"]["song"]) == 2
    assert conn.getAlbumList2("newest", size=3)["albumList2"]["album"]
    assert conn.search3("alpha")["searchResult3"]["song"][0]["title"] == "Alpha"
    assert conn.stream(songs[0]["id"]).read() == (rest.root / "music" / "00.flac").read_bytes()
    assert conn.download(songs[0]["id"]).read()[:4] == b"fLaC"
    assert conn.getCoverArt(songs[1]["id"]).read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert conn.scrobble(songs[0]["id"]) and conn.star(sids=[songs[0]["id"]])
    assert conn.getStarred2()["starred2"]["song"][0]["title"] == "Alpha" and conn.unstar(sids=[songs[0]["id"]])
    assert conn.setRating(songs[0]["id"], 5)
    made = conn.createPlaylist(name="py-sonic list", songIds=[s["id"] for s in songs])["playlist"]
    assert conn.updatePlaylist(made["id"], songIndexesToRemove=[0])
    assert [e["title"] for e in conn.getPlaylist(made["id"])["playlist"]["entry"]] == ["Beta"]
    assert "py-sonic list" in [p["name"] for p in conn.getPlaylists()["playlists"]["playlist"]]
    assert conn.deletePlaylist(made["id"])
    assert conn.getSimilarSongs(songs[0]["id"], count=2)["similarSongs"]["song"]
    assert conn.getSimilarSongs2(blips["id"], count=2)["similarSongs2"]["song"]
    assert conn.getTopSongs("The Blips")["topSongs"]["song"][0]["title"] == "Alpha"
    with pytest.raises(libsonic.errors.DataNotFoundError):
        conn.getSong("424242")
    wrong = libsonic.Connection(host, "alice", "nope", port=int(port), serverPath="/rest")
    with pytest.raises(libsonic.errors.CredentialError):
        wrong.ping()


def test_every_method_answers_in_xml_as_in_json(rest):
    """The methods not swept above, in XML: the same status as their JSON answer."""
    ids = ids_by_title(rest)
    zed, zulu = artist_id(rest, "Zed"), album_id(rest, "Zulu")
    pid = ok(rest, "createPlaylist", name="xml", songId=ids["Delta"], fmt="json")["playlist"]["id"]
    calls = [("getOpenSubsonicExtensions", {}), ("scrobble", {"id": ids["Delta"]}), ("star", {"albumId": zulu}),
             ("getStarred2", {}), ("unstar", {"albumId": zulu}), ("setRating", {"id": ids["Delta"], "rating": 3}),
             ("getPlaylists", {}), ("getPlaylist", {"id": pid}),
             ("updatePlaylist", {"playlistId": pid, "songIdToAdd": ids["Zeta"]}),
             ("findSonicPath", {"startSongId": ids["Delta"], "endSongId": ids["Zeta"], "count": 3}),
             ("getSimilarSongs", {"id": ids["Delta"], "count": 2}), ("getSimilarSongs2", {"id": zed, "count": 2}),
             ("getTopSongs", {"artist": "Zed"}), ("deletePlaylist", {"id": pid})]
    for method, params in calls:
        root = ok(rest, method, fmt="xml", **params)
        assert root.get("version") == "1.16.1" and root.get("type") == "sonicsort", method
    root = call(rest, "getPlaylist", fmt="xml", id=pid)  # deleted above: the error in XML
    assert root.get("status") == "failed" and root.find(NS + "error").get("code") == "70"
    song = ok(rest, "getSong", fmt="xml", id=ids["Delta"]).find(NS + "song")
    assert song.get("title") == "Delta" and song.get("isDir") == "false" and song.get("userRating") == "3"
    assert song.find(NS + "genres") is not None  # a list of objects is repeated elements
