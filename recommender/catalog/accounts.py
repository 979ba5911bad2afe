"""The catalog's listeners: users, their playlists, plays, stars and ratings (``Accounts``, a
part of ``Catalog``). These rows never change the set of tracks, so they start no new
catalog generation, but other processes see each write (``Catalog.write_token``); a removed
track takes its plays, ratings and playlist entries with it (foreign keys), and a removed
user everything of theirs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa

from ..errors import BadRequest, UnknownPlaylist, UnknownTrack, UnknownUser
from .schema import playlist_tracks, playlists, plays, ratings, stars, tracks, users


@dataclass(frozen=True)
class User:
    name: str
    password: str  # as stored: encrypted (``recommender.users``)
    is_admin: bool
    created_at: float
    has_api_key: bool


@dataclass(frozen=True)
class Playlist:
    id: int
    owner: str
    name: str
    comment: str | None
    public: bool
    created_at: float
    changed_at: float
    track_ids: tuple[int, ...]


class Accounts:
    """Users, playlists, plays, stars and ratings: the queries (``Catalog`` mixes this in)."""

    # ---------------------------------------------------------------- users
    def add_user(self, name: str, password: str, *, is_admin: bool = False) -> None:
        """A new user (``password`` as it is to be stored). A name taken, also in another case, is refused."""
        with self._tx() as db:
            taken = db.execute(sa.select(users.c.name).where(sa.func.lower(users.c.name) == name.lower())).scalar()
            if taken is not None:
                raise BadRequest(f"user {taken!r} exists already")
            db.execute(users.insert().values(name=name, password=password, is_admin=int(is_admin),
                                             created_at=time.time()))

    def user(self, name: str) -> User:
        rows = self._q(sa.select(users.c.name, users.c.password, users.c.is_admin, users.c.created_at,
                                 users.c.api_key_sha256).where(users.c.name == name))
        if not rows:
            raise UnknownUser(f"no user {name!r}")
        r = rows[0]
        return User(r[0], r[1], bool(r[2]), r[3], r[4] is not None)

    def users(self) -> list[User]:
        rows = self._q(sa.select(users.c.name, users.c.password, users.c.is_admin, users.c.created_at,
                                 users.c.api_key_sha256).order_by(users.c.name))
        return [User(r[0], r[1], bool(r[2]), r[3], r[4] is not None) for r in rows]

    def has_users(self) -> bool:
        return bool(self._q(sa.select(users.c.name).limit(1)))

    def set_user(self, name: str, **values: Any) -> None:
        """Change ``password``, ``is_admin`` or ``api_key_sha256`` of user ``name``."""
        values = {k: (int(v) if k == "is_admin" else v) for k, v in values.items()}
        with self._tx() as db:
            if not db.execute(users.update().where(users.c.name == name).values(**values)).rowcount:
                raise UnknownUser(f"no user {name!r}")

    def user_by_api_key(self, key_sha256: str) -> str | None:
        rows = self._q(sa.select(users.c.name).where(users.c.api_key_sha256 == key_sha256))
        return rows[0][0] if rows else None

    def delete_user(self, name: str) -> None:
        """The user and all of theirs: playlists, plays, stars and ratings."""
        with self._tx() as db:
            if not db.execute(users.delete().where(users.c.name == name)).rowcount:
                raise UnknownUser(f"no user {name!r}")

    # ---------------------------------------------------------------- plays, stars, ratings
    def _known_tracks(self, db: sa.Connection, track_ids: Iterable[int]) -> list[int]:
        ids = [int(t) for t in track_ids]
        found = set(db.execute(sa.select(tracks.c.id).where(tracks.c.id.in_(ids))).scalars()) if ids else set()
        missing = [t for t in ids if t not in found]
        if missing:
            raise UnknownTrack(f"unknown track {missing[0]}")
        return ids

    def add_plays(self, user: str, track_ids: Iterable[int], times: Iterable[float] | None = None) -> None:
        """Record that ``user`` played these tracks (at ``times``, seconds since the epoch; default now)."""
        with self._tx() as db:
            ids = self._known_tracks(db, track_ids)
            when = list(times) if times is not None else [time.time()] * len(ids)
            if ids:
                db.execute(plays.insert(), [{"user_name": user, "track_id": t, "played_at": float(w)}
                                            for t, w in zip(ids, when)])

    def plays_of(self, user: str, *, limit: int = 100_000) -> list[tuple[int, float]]:
        """``user``'s plays as (track id, when), latest first, at most ``limit``."""
        q = (sa.select(plays.c.track_id, plays.c.played_at).where(plays.c.user_name == user)
             .order_by(plays.c.played_at.desc()).limit(int(limit)))
        return [(int(t), float(w)) for t, w in self._q(q)]

    def play_counts(self) -> dict[int, int]:
        """track id → times played, by anyone."""
        q = sa.select(plays.c.track_id, sa.func.count()).group_by(plays.c.track_id)
        return {int(t): int(c) for t, c in self._q(q)}

    def last_played(self, *, user: str) -> dict[int, float]:
        """track id → when ``user`` last played it."""
        q = (sa.select(plays.c.track_id, sa.func.max(plays.c.played_at)).where(plays.c.user_name == user)
             .group_by(plays.c.track_id))
        return {int(t): float(w) for t, w in self._q(q)}

    def most_played(self, *, limit: int, track_ids: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """(track id, plays) by plays, most first (among ``track_ids`` when given)."""
        n = sa.func.count().label("n")
        q = sa.select(plays.c.track_id, n).group_by(plays.c.track_id)
        if track_ids is not None:
            q = q.where(plays.c.track_id.in_([int(t) for t in track_ids]))
        return [(int(t), int(c)) for t, c in self._q(q.order_by(n.desc(), plays.c.track_id).limit(int(limit)))]

    def recently_played(self, *, limit: int) -> list[int]:
        """Track ids by their last play, latest first."""
        last = sa.func.max(plays.c.played_at).label("last")
        rows = self._q(sa.select(plays.c.track_id, last).group_by(plays.c.track_id).order_by(last.desc()).limit(int(limit)))
        return [int(r[0]) for r in rows]

    def star(self, user: str, item_ids: Iterable[str], *, on: bool = True) -> None:
        """Star (or with ``on=False`` unstar) songs, albums or artists by their ids (the caller checks them)."""
        ids = [str(i) for i in item_ids]
        with self._tx() as db:
            if on:
                self._upsert(stars, [{"user_name": user, "item_id": i, "starred_at": time.time()} for i in ids],
                             replace=False)
            elif ids:
                db.execute(stars.delete().where(stars.c.user_name == user, stars.c.item_id.in_(ids)))

    def starred(self, user: str) -> dict[str, float]:
        """item id → when ``user`` starred it, latest first."""
        q = sa.select(stars.c.item_id, stars.c.starred_at).where(stars.c.user_name == user)
        return {i: float(w) for i, w in self._q(q.order_by(stars.c.starred_at.desc()))}

    def rate(self, user: str, track_id: int, rating: int) -> None:
        """``rating`` 1–5 stores it, 0 removes it."""
        with self._tx() as db:
            (tid,) = self._known_tracks(db, [track_id])
            db.execute(ratings.delete().where(ratings.c.user_name == user, ratings.c.track_id == tid))
            if rating:
                db.execute(ratings.insert().values(user_name=user, track_id=tid, rating=int(rating)))

    def ratings(self, user: str) -> dict[int, int]:
        """track id → ``user``'s rating."""
        q = sa.select(ratings.c.track_id, ratings.c.rating).where(ratings.c.user_name == user)
        return {int(t): int(r) for t, r in self._q(q)}

    # ---------------------------------------------------------------- playlists
    def create_playlist(self, owner: str, name: str, track_ids: Iterable[int] = (), *,
                        comment: str | None = None, public: bool = False) -> int:
        now = time.time()
        with self._tx() as db:
            ids = self._known_tracks(db, track_ids)
            pid = db.execute(playlists.insert().values(owner=owner, name=name, comment=comment, public=int(public),
                                                       created_at=now, changed_at=now)
                             .returning(playlists.c.id)).scalar_one()
            if ids:
                db.execute(playlist_tracks.insert(), [{"playlist_id": pid, "position": i, "track_id": t}
                                                      for i, t in enumerate(ids)])
        return int(pid)

    def playlist(self, playlist_id: int) -> Playlist:
        found = self.playlists(ids=[playlist_id])
        if not found:
            raise UnknownPlaylist(f"no playlist {playlist_id}")
        return found[0]

    def playlists(self, *, visible_to: str | None = None, ids: Iterable[int] | None = None) -> list[Playlist]:
        """Playlists by name: all, those ``visible_to`` a user (theirs and public ones), or ``ids``."""
        q = sa.select(playlists.c.id, playlists.c.owner, playlists.c.name, playlists.c.comment, playlists.c.public,
                      playlists.c.created_at, playlists.c.changed_at)
        if visible_to is not None:
            q = q.where(sa.or_(playlists.c.owner == visible_to, playlists.c.public == 1))
        if ids is not None:
            want = [int(i) for i in ids if 0 < int(i) < 2**63]
            if not want:
                return []
            q = q.where(playlists.c.id.in_(want))
        with self._snapshot() as db:
            rows = db.execute(q.order_by(playlists.c.name, playlists.c.id)).all()
            entries: dict[int, list[int]] = {}
            if rows:
                for pid, tid in db.execute(sa.select(playlist_tracks.c.playlist_id, playlist_tracks.c.track_id)
                                           .where(playlist_tracks.c.playlist_id.in_([r[0] for r in rows]))
                                           .order_by(playlist_tracks.c.playlist_id, playlist_tracks.c.position)):
                    entries.setdefault(int(pid), []).append(int(tid))
        return [Playlist(int(r[0]), r[1], r[2], r[3], bool(r[4]), r[5], r[6], tuple(entries.get(int(r[0]), ())))
                for r in rows]

    def update_playlist(self, playlist_id: int, *, name: str | None = None, comment: str | None = None,
                        public: bool | None = None, track_ids: Iterable[int] | None = None,
                        add: Iterable[int] = (), remove_positions: Iterable[int] = ()) -> None:
        """Change a playlist: its name, comment, visibility; its tracks replaced (``track_ids``),
        or some removed (by position in the current order) and others appended (``add``)."""
        with self._tx() as db:
            exists = db.execute(sa.select(playlists.c.id).where(playlists.c.id == int(playlist_id))).scalar()
            if exists is None:
                raise UnknownPlaylist(f"no playlist {playlist_id}")
            values: dict[str, Any] = {"changed_at": time.time()}
            if name is not None:
                values["name"] = name
            if comment is not None:
                values["comment"] = comment
            if public is not None:
                values["public"] = int(public)
            db.execute(playlists.update().where(playlists.c.id == int(playlist_id)).values(**values))
            current = [int(t) for t in db.execute(sa.select(playlist_tracks.c.track_id)
                                                  .where(playlist_tracks.c.playlist_id == int(playlist_id))
                                                  .order_by(playlist_tracks.c.position)).scalars()]
            if track_ids is not None:
                current = self._known_tracks(db, track_ids)
            drop = {int(i) for i in remove_positions}
            if any(not 0 <= i < len(current) for i in drop):
                raise BadRequest(f"no song at index {max(drop)} of playlist {playlist_id} ({len(current)} songs)")
            current = [t for i, t in enumerate(current) if i not in drop] + self._known_tracks(db, add)
            db.execute(playlist_tracks.delete().where(playlist_tracks.c.playlist_id == int(playlist_id)))
            if current:
                db.execute(playlist_tracks.insert(), [{"playlist_id": int(playlist_id), "position": i, "track_id": t}
                                                      for i, t in enumerate(current)])

    def delete_playlist(self, playlist_id: int) -> None:
        with self._tx() as db:
            if not db.execute(playlists.delete().where(playlists.c.id == int(playlist_id))).rowcount:
                raise UnknownPlaylist(f"no playlist {playlist_id}")
