"""The catalog, in SQLite and in PostgreSQL: rows, vectors, their caches across connections, tags, ids, migrations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from .helpers import UNDO_SCHEMA_6, UNDO_SCHEMA_7


def record(i: int, **fields):
    """The catalog record of a made-up file ``/m/<i>.wav`` (4-d embedding of ones), ``fields`` replaced."""
    from recommender.catalog import NewTrack

    base = dict(path=f"/m/{i}.wav", size=1, mtime_ns=1, sha256=f"h{i}", title=f"T{i}", artist="A", album=None,
                duration_s=1.0, genre="drone", probabilities={"drone": 1.0}, embedding=np.ones(4, np.float32),
                model_version="m1")
    return NewTrack(**{**base, **fields})


def test_row_cache_follows_every_write_of_any_connection(catalog_at):
    """Catalog keeps rows and vectors it has read; a write by itself or by another connection
    (another process, say) is seen on the next read."""
    from recommender.catalog import Catalog, NewTrack
    from recommender.errors import UnknownTrack

    def rec(i: int) -> NewTrack:
        return record(i, embedding=np.random.default_rng(i).normal(size=8).astype(np.float32))

    a, b = Catalog(catalog_at("c")), Catalog(catalog_at("c"))
    t1, t2 = a.add([rec(1), rec(2)])
    assert a.get(t1).title == "T1" and a.generation == 1
    v1 = a.vectors([t1])[t1]
    assert not v1.flags.writeable  # shared between callers: nobody may change it in place
    got = a.get(t1, with_embedding=True)
    got.title = "changed by a caller"
    got.embedding[:] = 0
    assert a.get(t1).title == "T1" and np.array_equal(a.vectors([t1])[t1], v1)  # callers get copies
    # writes through the other connection
    b.replace_embeddings([(t1, "clicks", {"clicks": 1.0}, np.ones(8, np.float32), False, {"mellow": 0.5})], "m1")
    assert a.get(t1).genre == "clicks" and np.array_equal(a.vectors([t1])[t1], np.ones(8)) and a.generation == 2
    assert a.get(t1).tags == {"mellow": 0.5} and [t.id for t in a.search(tag="Mellow")] == [t1]
    b.add([], links=[("/m/1-copy.wav", t1, 1, 1)])
    assert a.get(t1).paths == ["/m/1.wav", "/m/1-copy.wav"]
    b.forget_paths(["/m/1.wav"])
    assert a.get(t1).paths == ["/m/1-copy.wav"]
    b.remove([t2])
    with pytest.raises(UnknownTrack):
        a.get(t2)
    assert set(a.get_many([t1, t2])) == {t1} and a.generation == 3
    # and through its own
    a.remove([t1])
    assert a.get_many([t1]) == {} and a.vectors([t1]) == {} and a.generation == 4
    # a small cache still answers every id of a large request
    c = Catalog(catalog_at("d"), row_cache=2)
    ids = c.add([rec(i) for i in range(5)])
    assert sorted(c.get_many(ids)) == sorted(ids) and sorted(c.vectors(ids)) == sorted(ids)
    a.close(), b.close(), c.close()


def test_one_check_per_thread_asks_once_and_still_sees_its_own_writes(catalog_at):
    """Inside ``one_check_per_thread`` (an API request) another connection's write is seen from
    the next block on, not in the middle of this one; this connection's own writes at once."""
    import threading

    from recommender.catalog import Catalog, one_check_per_thread

    a, b = Catalog(catalog_at("s")), Catalog(catalog_at("s"))
    (t1,) = a.add([record(1)])
    with one_check_per_thread():
        assert a.generation == 1 and a.get(t1).genre == "drone"
        b.replace_embeddings([(t1, "clicks", {"clicks": 1.0}, np.ones(4, np.float32), False, {})], "m1")
        assert a.generation == 1 and a.get(t1).genre == "drone"  # one check per block: not yet
        seen_elsewhere = []
        th = threading.Thread(target=lambda: seen_elsewhere.append(a.get(t1).genre))  # another thread checks
        th.start()
        th.join()
        (t2,) = a.add([record(2)])  # its own write: asked again
        assert a.generation == 3 and a.get(t1).genre == "clicks" and a.get(t2).title == "T2"
    assert seen_elsewhere == ["clicks"]
    b.remove([t2])
    assert t2 not in a.get_many([t1, t2]) and a.generation == 4  # outside: every read checks
    a.close(), b.close()


def test_requests_on_postgresql_ask_nothing_while_the_change_listener_hears_no_write(postgres_db):
    """On PostgreSQL a request's cached reads make no round trip while the catalog's LISTEN
    connection is up; another connection's write (its NOTIFY) is seen within a second. When the
    listener's connection is killed, requests ask the database again, and it reconnects."""
    import sqlalchemy as sa

    from .helpers import postgres_schema
    from recommender.catalog import Catalog, one_check_per_thread

    url = postgres_schema(postgres_db)
    a, b = Catalog(url), Catalog(url)
    statements = []
    sa.event.listen(a._engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def request(fn):
        with one_check_per_thread():
            return fn()

    def until(cond, timeout=5.0):
        stop = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < stop, "not seen in time"
            time.sleep(0.005)
        return time.monotonic() + timeout - stop

    t1, t2 = b.add([record(1), record(2)])
    request(lambda: a.get_many([t1, t2]))
    until(lambda: a._listener.live)
    request(lambda: (a.get_many([t1, t2]), a.generation))  # the first check with the listener up
    statements.clear()
    for _ in range(50):
        assert request(lambda: (sorted(a.get_many([t1, t2])), a.generation)) == ([t1, t2], 1)
    assert statements == []  # 50 requests, no round trip
    b.replace_embeddings([(t1, "clicks", {"clicks": 1.0}, np.ones(4, np.float32), False, {})], "m1")
    assert until(lambda: request(lambda: a.get(t1).genre) == "clicks") < 1.0
    assert request(lambda: a.generation) == 2
    b.remove([t2])
    until(lambda: request(lambda: t2 not in a.get_many([t1, t2])))
    # the listener's connection dies: requests poll (and still see writes) until it is back
    count = a._listener.count
    with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.pool.NullPool
                          ).connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": a._listener.backend_pid})
    (t3,) = b.add([record(3)])
    until(lambda: t3 in request(lambda: a.get_many([t1, t3])))
    until(lambda: a._listener.live and a._listener.count > count)  # reconnected
    assert sorted(request(lambda: a.get_many([t1, t3]))) == [t1, t3]  # asks once after the reconnection
    statements.clear()
    assert request(lambda: sorted(a.get_many([t1, t3]))) == [t1, t3] and statements == []
    a.close(), b.close()


def test_tracks_are_found_by_tags_that_stand_out_against_the_model_priors(catalog_at):
    """A mood's probability rarely ranks in a track's top 5 (frequent MSD tags such as rock
    do); at 3x its prior it still makes the track findable, and below that it does not."""
    from recommender.catalog import Catalog, NewTrack

    def rec(i: int, mellow: float) -> NewTrack:
        tags = {"rock": 0.4, "pop": 0.3, "indie": 0.2, "jazz": 0.15, "soul": 0.12, "Mellow": mellow}
        return NewTrack(path=f"/m/{i}.wav", size=1, mtime_ns=1, sha256=f"h{i}", title=f"T{i}", artist="A",
                        album=None, duration_s=1.0, genre="drone", probabilities={"drone": 1.0},
                        embedding=np.ones(4, np.float32), model_version="m1", tags=tags)

    priors = {"rock": 0.13, "pop": 0.13, "indie": 0.05, "jazz": 0.16, "soul": 0.07, "Mellow": 0.012}
    c = Catalog(catalog_at("c"))
    mellow, plain = c.add([rec(1, 0.07), rec(2, 0.02)], tag_priors=priors)
    assert [t.id for t in c.search(tag="mellow")] == [mellow]
    assert [t for t, _ in c.get(mellow).top_tags()] == ["rock", "pop", "indie", "jazz", "soul"]
    assert {t.id for t in c.search(tag="rock")} == {mellow, plain}
    no_priors = Catalog(catalog_at("d"))
    (only,) = no_priors.add([rec(3, 0.07)])
    assert no_priors.search(tag="mellow") == []  # top 5 only, without the model's priors


def test_ids_are_never_reused(catalog_at):
    """Add A, delete it, add B: B gets a new id, across connections and reopenings."""
    from recommender.catalog import Catalog

    a = Catalog(catalog_at("c"))
    (t1, t2) = a.add([record(1), record(2)])
    a.remove([t2])
    (t3,) = a.add([record(3)])
    assert t3 > t2  # SQLite alone would hand out t2 again
    a.remove([t3])
    a.close()
    b = Catalog(catalog_at("c"))
    (t4,) = b.add([record(4)])
    assert t4 > t3 and b.add([record(1)]) == [t1]  # known audio keeps its id
    assert b.stats()["tracks"] == 2 and b.stats()["catalog_bytes"] > 0
    b.close()


def test_an_older_sqlite_catalog_migrates_in_place(tmp_path):
    """A schema-2 file (as 0.2 wrote it: no id high-water mark, paths ordered by rowid, tags
    matched by collation) upgrades on open and keeps its ids, paths and their order."""
    import sqlite3

    from recommender.catalog import SCHEMA_VERSION, Catalog

    a = Catalog(tmp_path / "c.sqlite3")
    (t1, t2) = a.add([record(1), record(2)])
    a.remove([t2])
    (t3,) = a.add([record(3)])
    assert t3 > t2  # SQLite alone would hand out t2 again
    a.remove([t3])
    a.close()
    b = Catalog(tmp_path / "c.sqlite3")
    (t4,) = b.add([record(4)])
    b.add([], links=[("/m/1-copy.wav", t1, 1, 1)])
    b.close()

    db = sqlite3.connect(tmp_path / "c.sqlite3")  # make it a schema-2 file, then open it
    db.executescript(UNDO_SCHEMA_6 + "DROP INDEX paths_seq; ALTER TABLE paths DROP COLUMN seq; DROP INDEX track_tags_lower; "
                     "DROP TABLE changes; DELETE FROM meta WHERE key IN ('last_track_id', 'writes', 'changes_from'); "
                     "UPDATE meta SET value='2' WHERE key='schema_version';")
    db.close()
    c = Catalog(tmp_path / "c.sqlite3")
    assert c.get_meta("schema_version") == str(SCHEMA_VERSION) and sorted(c.ids().tolist()) == [t1, t4]
    assert c.get(t1).paths == ["/m/1.wav", "/m/1-copy.wav"]
    assert c.changes_since(c.generation - 1) is None and c.changes_since(c.generation)[1].size == 0  # log starts now
    c.add([], links=[("/m/1-third.wav", t1, 1, 1)])
    assert c.get(t1).paths == ["/m/1.wav", "/m/1-copy.wav", "/m/1-third.wav"]
    c.remove([t4])
    (t5,) = c.add([record(5)])
    assert t5 > t4  # the mark starts at the old file's max(id): its newest id is not handed out again
    c.close()


def test_a_schema_6_catalog_gains_fingerprints_and_duplicate_pairs(tmp_path):
    """v6 → v7: the tracks keep their rows, have no fingerprint yet, and pairs can be stored."""
    import sqlite3

    from recommender.catalog import SCHEMA_VERSION, Catalog

    a = Catalog(tmp_path / "c.sqlite3")
    t1, t2 = a.add([record(1), record(2)])
    a.close()
    db = sqlite3.connect(tmp_path / "c.sqlite3")
    db.executescript(UNDO_SCHEMA_7 + "UPDATE meta SET value='6' WHERE key='schema_version';")
    db.close()
    c = Catalog(tmp_path / "c.sqlite3")
    assert c.get_meta("schema_version") == str(SCHEMA_VERSION) == "7"
    assert c.ids_without_fingerprint() == [t1, t2] and c.fingerprints([t1, t2]) == {}
    c.set_fingerprints({t1: b"\x01abcd", t2: b"\x01abce"})
    assert c.ids_to_compare() == [t1, t2]
    c.record_duplicates([(t2, t1, 0.1, 0.99), (t1, 999, 0.1, 0.9)], through=t2)
    assert c.duplicate_pairs() == [(t1, t2, 0.1, 0.99)] and c.ids_to_compare() == []
    c.remove([t2])
    assert c.duplicate_pairs() == []  # a removed track takes its pairs with it
    c.close()


def test_concurrent_adds_of_the_same_audio_make_one_track(catalog_at):
    """8 connections (as 8 workers or nodes would hold) add the same new audio at once: exactly
    one of them creates the track, all get its id, and the catalog holds one row."""
    import threading

    from recommender.catalog import Catalog

    rec = record(0, path="/m/same.wav", sha256="same", title="Same", tags={"rock": 0.5})
    conns = [Catalog(catalog_at("c")) for _ in range(8)]
    start, results = threading.Barrier(8), []

    def add(c):
        created: list[bool] = []
        start.wait()
        results.append((c.add([rec], created=created)[0], created[0]))

    threads = [threading.Thread(target=add, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({tid for tid, _ in results}) == 1 and sum(made for _, made in results) == 1
    assert len(conns[0]) == 1 and conns[0].generation == 1 and conns[0].get(results[0][0]).paths == ["/m/same.wav"]
    for c in conns:
        c.close()


def test_a_catalog_that_cannot_be_opened_says_why(tmp_path):
    """A URL of another kind, or a PostgreSQL server that does not answer: a CatalogError naming it."""
    from recommender.catalog import Catalog
    from recommender.errors import CatalogError

    with pytest.raises(CatalogError, match="a SQLite file or a postgresql:// URL"):
        Catalog("mysql://u@127.0.0.1/db")
    with pytest.raises(CatalogError, match="cannot open the catalog"):
        Catalog("postgresql://nobody:secret@127.0.0.1:1/none")
    try:
        Catalog("postgresql://nobody:secret@127.0.0.1:1/none")
    except CatalogError as exc:
        assert "secret" not in str(exc)  # the password is never shown


def test_copy_moves_a_catalog_to_postgresql_and_back_keeping_ids(tmp_path, postgres_db):
    """SQLite → PostgreSQL → SQLite: the same ids, rows, paths in their order, tags, embeddings
    and id high-water mark; a copy into a catalog that is not empty, or onto itself, is
    refused and changes nothing."""
    from recommender.catalog import Catalog, NewTrack, copy_catalog
    from recommender.errors import CatalogError

    from .helpers import postgres_schema

    def rec(i: int) -> NewTrack:
        return record(i, size=i, mtime_ns=i, album="B" if i % 2 else None, duration_s=1.0 + i,
                      embedding=np.random.default_rng(i).normal(size=8).astype(np.float32),
                      tags={"rock": 0.1 * i, "Mellow": 0.5})

    a = Catalog(tmp_path / "a.sqlite3")
    ids = a.add([rec(i) for i in range(1, 8)], tag_priors={"Mellow": 0.01})
    a.add([], links=[("/m/1-copy.wav", ids[0], 1, 1), ("/m/0-first.wav", ids[2], 1, 1)])
    a.remove([ids[-1]])  # the highest id was given once: the copy must not hand it out again
    before = a.get_many(a.ids(), with_embedding=True)
    a.close()
    pg = postgres_schema(postgres_db)
    d = copy_catalog(tmp_path / "a.sqlite3", pg)
    assert (d["tracks"], d["paths"], d["last_track_id"]) == (6, 8, ids[-1]) and d["track_tags"] > 0
    # vacuumed and analysed at the end (never-analysed tables have reltuples -1): a copied
    # catalog's first lookups are planned with statistics, not blind (see Catalog.analyze)
    c = Catalog(pg)
    stats = dict(c._db.exec_driver_sql(  # noqa: SLF001
        "SELECT relname, reltuples FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relname IN ('tracks', 'paths')").all())
    c.close()
    assert stats == {"tracks": 6, "paths": 8}
    back = tmp_path / "back.sqlite3"
    copy_catalog(pg, back)
    for where in (pg, back):
        c = Catalog(where)
        after = c.get_many(c.ids(), with_embedding=True)
        assert sorted(after) == sorted(before)
        for i, t in before.items():
            u = after[i]
            assert (u.paths, u.title, u.album, u.duration_s, u.tags, u.added_at) == \
                   (t.paths, t.title, t.album, t.duration_s, t.tags, t.added_at)
            assert np.array_equal(u.embedding, t.embedding)
        assert [t.id for t in c.search(tag="mellow")] == sorted(before)
        assert c.model_version == "m1" and c.generation > 0
        (new,) = c.add([rec(100)])
        assert new > ids[-1]
        c.close()
    with pytest.raises(CatalogError, match="not empty"):
        copy_catalog(tmp_path / "a.sqlite3", back)
    with pytest.raises(CatalogError, match="same catalog"):
        copy_catalog(tmp_path / "a.sqlite3", tmp_path / "a.sqlite3")
    assert len(Catalog(back)) == 7  # untouched by the refused copy
    with pytest.raises(CatalogError, match="no catalog there"):  # a mistyped source is not made empty
        copy_catalog(tmp_path / "missing" / "a.sqlite3", tmp_path / "c.sqlite3")
    assert not (tmp_path / "missing").exists() and not (tmp_path / "c.sqlite3").exists()


def test_the_change_log_says_what_changed_since_a_generation(catalog_at):
    """changes_since(g): ids added or re-embedded after g and ids removed after g, each by its
    last change; None for a generation the log does not cover."""
    from recommender.catalog import Catalog

    c = Catalog(catalog_at("c"))
    now, added, redone, gone = c.changes_since(0)
    assert (now, added.size, redone.size, gone.size) == (0, 0, 0, 0)
    a, b, d = c.add([record(1), record(2), record(3)])
    g1 = c.generation
    c.add([record(1)])  # known audio: no change
    assert c.generation == g1
    (e,) = c.add([record(4)])
    c.remove([b, 999])
    c.replace_embeddings([(a, "clicks", {"clicks": 1.0}, np.full(4, 2, np.float32), False, {})], "m1")
    now, added, redone, gone = c.changes_since(g1)
    assert now == c.generation == g1 + 3
    assert (added.tolist(), redone.tolist(), gone.tolist()) == ([e], [a], [b])
    now, added, redone, gone = c.changes_since(0)
    assert (added.tolist(), redone.tolist(), gone.tolist()) == ([d, e], [a], [b])  # b: added, then removed
    assert c.changes_since(now) is not None and c.changes_since(now)[1].size == 0
    assert c.changes_since(now + 1) is None  # from a future the catalog never had
    c.close()


def test_a_process_refuses_to_write_once_a_newer_sonicsort_upgraded_the_catalog(catalog_at):
    """Rolling upgrades: an older process still running on a catalog that a newer sonicsort
    migrated gets a clear 'restart' error on its next write, and writes nothing."""
    import sqlalchemy as sa

    from recommender.catalog import SCHEMA_VERSION, Catalog, catalog_url
    from recommender.errors import CatalogUpgraded

    rec = record(1)
    old = Catalog(catalog_at("c"))
    eng = sa.create_engine(catalog_url(catalog_at("c")))
    with eng.begin() as c:  # what the newer sonicsort's migration leaves
        c.exec_driver_sql(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    eng.dispose()
    with pytest.raises(CatalogUpgraded, match="restart"):
        old.add([rec])
    assert len(old) == 0 and old.generation == 0
    old.close()


def test_users_playlists_plays_stars_and_ratings_in_either_database(catalog_at):
    """The listeners' tables on SQLite and PostgreSQL: a removed track leaves playlists, plays
    and ratings without it; a removed user takes all of theirs; every write is seen by a second
    connection (``write_token``)."""
    from recommender.catalog import Catalog
    from recommender.errors import BadRequest, UnknownPlaylist, UnknownTrack, UnknownUser

    c, other = Catalog(catalog_at("c")), Catalog(catalog_at("c"))
    t1, t2, t3 = c.add([record(1), record(2), record(3)])
    c.add_user("ann", "sealed-1", is_admin=True)
    c.add_user("ben", "sealed-2")
    with pytest.raises(BadRequest, match="exists"):
        c.add_user("ANN", "x")
    assert [(u.name, u.is_admin) for u in other.users()] == [("ann", True), ("ben", False)]
    before = other.write_token()
    pid = c.create_playlist("ann", "Mix", [t1, t2, t3], comment="hi")
    assert other.write_token() != before  # another connection sees the write
    c.update_playlist(pid, add=[t1], remove_positions=[1], public=True)
    assert other.playlist(pid).track_ids == (t1, t3, t1) and other.playlist(pid).public
    with pytest.raises(UnknownTrack):
        c.update_playlist(pid, add=[999])
    assert c.playlist(pid).track_ids == (t1, t3, t1)  # the refused change left it as it was
    assert [p.name for p in c.playlists(visible_to="ben")] == ["Mix"]
    c.add_plays("ben", [t1, t1, t3], [100.0, 200.0, 150.0])
    assert c.play_counts() == {t1: 2, t3: 1} and c.last_played(user="ben") == {t1: 200.0, t3: 150.0}
    assert c.most_played(limit=5) == [(t1, 2), (t3, 1)] and c.recently_played(limit=5) == [t1, t3]
    c.star("ben", [str(t3), "al-x"])
    c.rate("ben", t3, 4)
    assert set(other.starred("ben")) == {"al-x", str(t3)}
    assert other.ratings("ben") == {t3: 4}
    c.remove([t3])
    assert c.playlist(pid).track_ids == (t1, t1) and c.play_counts() == {t1: 2} and c.ratings("ben") == {}
    c.delete_user("ben")
    assert c.play_counts() == {} and c.starred("ben") == {}
    with pytest.raises(UnknownUser):
        c.user("ben")
    c.delete_user("ann")
    with pytest.raises(UnknownPlaylist):
        c.playlist(pid)
    c.close()
    other.close()
