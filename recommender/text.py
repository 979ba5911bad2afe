"""Text the catalog stores and the exports write: no control characters.

A title, artist or album comes from a form field or a file's tags, both chosen by whoever
made the file. A line break in one would start a new line in a line-based export (an M3U8
entry or directive of the title's own choosing); other control characters confuse terminals
and logs. ``clean_text`` is applied where tracks enter the catalog, and every export applies
it again to whatever it writes, so a catalog written before the rule is exported safely too.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls, DEL, and Unicode's line and paragraph separators (which some players
# and editors also break lines at)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]+")
_SPACES = re.compile(r" {2,}")


def clean_text(value: str | None) -> str | None:
    """``value`` with every run of control characters (tabs and line breaks included) replaced
    by one space, runs of spaces collapsed and the ends stripped; None stays None, and a value
    left empty becomes None."""
    if value is None:
        return None
    text = _SPACES.sub(" ", _CONTROL.sub(" ", unicodedata.normalize("NFC", str(value)))).strip()
    return text or None


def has_control(value: str) -> bool:
    """Whether ``value`` holds a character ``clean_text`` would replace."""
    return bool(_CONTROL.search(value))


__all__ = ["clean_text", "has_control"]
