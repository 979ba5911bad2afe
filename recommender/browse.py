"""The catalog as a music library browses it: artists, their albums and the albums' songs,
grouped by the files' tags (``MusicIndex``).

An album belongs to its album artist (the ``albumartist`` tag), else to its track artist;
tracks without those tags go to "Unknown Artist" and "Unknown Album". Ids are stable while
the names are: an artist's is ``ar-`` and 12 hex digits of the SHA-1 of its lower-cased
name, an album's ``al-`` and those of its artist's and its own name; a song's id is its
catalog track id, as in ``/v1``. A song's genre is its file's genre tag when it has one,
else the genre the model predicted (``Song.genre_source`` says which).

The index is built in one query and kept while the catalog's generation is unchanged
(``Service.music_index``).
"""

from __future__ import annotations

import hashlib
import mimetypes
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

UNKNOWN_ARTIST, UNKNOWN_ALBUM = "Unknown Artist", "Unknown Album"
IGNORED_ARTICLES = ("The", "El", "La", "Los", "Las", "Le", "Les")
_TYPES = {".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".mp3": "audio/mpeg",
          ".m4a": "audio/mp4", ".wav": "audio/wav", ".au": "audio/basic", ".aiff": "audio/aiff", ".aif": "audio/aiff"}


def _key(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def artist_id(name: str) -> str:
    return "ar-" + hashlib.sha1(_key(name).encode()).hexdigest()[:12]


def album_id(artist: str, album: str) -> str:
    return "al-" + hashlib.sha1((_key(artist) + "\x00" + _key(album)).encode()).hexdigest()[:12]


def sort_name(name: str) -> str:
    """The name an index sorts and files by: without a leading article ("The Beatles" → "Beatles")."""
    for a in IGNORED_ARTICLES:
        if name[:len(a) + 1].lower() == a.lower() + " " and len(name) > len(a) + 1:
            return name[len(a) + 1:]
    return name


def index_letter(name: str) -> str:
    first = sort_name(name)[:1].upper()
    return first if first.isalpha() else "#"


@dataclass(frozen=True)
class Song:
    id: int
    title: str
    artist: str  # the track artist (else the album artist, else Unknown Artist)
    album: str
    album_id: str
    artist_id: str  # the album's artist, whose albums list this song's album
    track_no: int | None
    disc_no: int | None
    year: int | None
    genre: str
    genre_source: str  # "tag" or "predicted"
    predicted_genre: str
    duration_s: float
    added_at: float
    path: str | None
    size: int | None

    @property
    def suffix(self) -> str | None:
        return Path(self.path).suffix.lstrip(".").lower() or None if self.path else None

    @property
    def content_type(self) -> str:
        ext = Path(self.path).suffix.lower() if self.path else ""
        return _TYPES.get(ext) or mimetypes.guess_type(self.path or "")[0] or "application/octet-stream"

    @property
    def bit_rate(self) -> int | None:
        """kbit/s of the file as a whole (its size over its length)."""
        if not self.size or self.duration_s <= 0:
            return None
        return max(1, round(self.size * 8 / self.duration_s / 1000))


@dataclass
class Album:
    id: str
    name: str
    artist: str
    artist_id: str
    song_ids: list[int] = field(default_factory=list)
    year: int | None = None
    genre: str | None = None
    duration_s: float = 0.0
    created: float = 0.0


@dataclass
class Artist:
    id: str
    name: str
    album_ids: list[str] = field(default_factory=list)


class MusicIndex:
    """Artists → albums → songs of one catalog generation (see the module docs)."""

    def __init__(self, rows: list[tuple], generation: int) -> None:
        self.generation = generation
        self.songs: dict[int, Song] = {}
        self.albums: dict[str, Album] = {}
        self.artists: dict[str, Artist] = {}
        for (tid, title, artist, album, album_artist, track_no, disc_no, year, tag_genre, genre, duration, added,
             path, size) in rows:
            owner = album_artist or artist or UNKNOWN_ARTIST
            aid, alid = artist_id(owner), album_id(owner, album or UNKNOWN_ALBUM)
            song = Song(id=int(tid), title=title, artist=artist or owner, album=album or UNKNOWN_ALBUM, album_id=alid,
                        artist_id=aid, track_no=track_no, disc_no=disc_no, year=year, genre=tag_genre or genre,
                        genre_source="tag" if tag_genre else "predicted", predicted_genre=genre,
                        duration_s=float(duration), added_at=float(added), path=path, size=size)
            self.songs[song.id] = song
            ar = self.artists.get(aid)
            if ar is None:
                ar = self.artists[aid] = Artist(aid, owner)
            al = self.albums.get(alid)
            if al is None:
                al = self.albums[alid] = Album(alid, song.album, owner, aid, created=song.added_at)
                ar.album_ids.append(alid)
            al.song_ids.append(song.id)
            al.duration_s += song.duration_s
            al.created = min(al.created, song.added_at)
        for al in self.albums.values():
            songs = [self.songs[i] for i in al.song_ids]
            al.song_ids.sort(key=lambda i: (self.songs[i].disc_no or 1, self.songs[i].track_no or 10**6,
                                            _key(self.songs[i].title), i))
            years = [s.year for s in songs if s.year]
            al.year = min(years) if years else None
            al.genre = Counter(s.genre for s in songs).most_common(1)[0][0]
        for ar in self.artists.values():
            ar.album_ids.sort(key=lambda a: (self.albums[a].year or 0, _key(self.albums[a].name)))
        self.artist_order = sorted(self.artists, key=lambda a: _key(sort_name(self.artists[a].name)))
        groups: dict[str, list[str]] = {}
        for a in self.artist_order:
            groups.setdefault(index_letter(self.artists[a].name), []).append(a)
        # (letter, artist ids) as indexes list them: A to Z, then "#"
        self.letters = sorted(groups.items(), key=lambda kv: (kv[0] == "#", kv[0]))
        self.album_order = sorted(self.albums, key=lambda a: _key(self.albums[a].name))
        self.genres: Counter = Counter(s.genre for s in self.songs.values())
        self.genre_albums: Counter = Counter(g for al in self.albums.values()
                                             for g in {self.songs[i].genre for i in al.song_ids})
        self.last_modified = max((s.added_at for s in self.songs.values()), default=0.0)
        # what search matches against, folded once, in the order answers list them
        self._find_artists = _Haystack([(_key(self.artists[a].name), self.artists[a]) for a in self.artist_order])
        self._find_albums = _Haystack([(_key(self.albums[a].name + " " + self.albums[a].artist), self.albums[a])
                                       for a in self.album_order])
        self._find_songs = _Haystack([(_key(" ".join(t for t in (s.title, s.artist, s.album) if t)), s)
                                      for s in self.songs.values()])

    def songs_of(self, ids) -> list[Song]:
        return [self.songs[i] for i in ids if i in self.songs]

    def search(self, query: str, *, artists: tuple[int, int], albums: tuple[int, int],
               songs: tuple[int, int]) -> tuple[list[Artist], list[Album], list[Song]]:
        """Artists, albums and songs whose name contains every word of ``query`` (case-insensitive;
        empty: everything), each (count, offset)."""
        words = _key(query.strip().strip('"')).split()
        return (self._find_artists.find(words, *artists), self._find_albums.find(words, *albums),
                self._find_songs.find(words, *songs))


class _Haystack:
    """Folded texts of items in one string, searched at C speed: ``str.find`` of the rarest
    word of a query jumps from candidate to candidate, and only those lines are checked for
    the other words."""

    def __init__(self, rows: list[tuple[str, object]]) -> None:
        self.texts = [t.replace("\n", " ") for t, _ in rows]
        self.items = [i for _, i in rows]
        self.blob = "\n".join(self.texts)
        self.starts, pos = [], 0
        for t in self.texts:
            self.starts.append(pos)
            pos += len(t) + 1

    def find(self, words: list[str], count: int, offset: int) -> list:
        import bisect

        if not count:
            return []
        if not words:
            return self.items[offset:offset + count]
        key = min(words, key=self.blob.count)  # the rarest word: the fewest candidates
        out, skip, at, last = [], offset, self.blob.find(key), -1
        while at != -1:
            line = bisect.bisect_right(self.starts, at) - 1
            if line != last:
                last = line
                if all(w in self.texts[line] for w in words):
                    if skip:
                        skip -= 1
                    else:
                        out.append(self.items[line])
                        if len(out) == count:
                            break
            next_line = self.starts[line + 1] if line + 1 < len(self.starts) else len(self.blob)
            at = self.blob.find(key, next_line)
        return out
