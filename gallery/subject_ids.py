"""The subject-id rule: ids every HTTP client can put in a URL path segment and get back unchanged.

A subject id is 1-128 characters, NFC-normalised (a decomposed "Zoe" + U+0308 is stored as "Zoë"),
made of:
- letters and combining marks of any script (Unicode categories L*, M*), digits and other numbers (N*);
- emoji and other pictographic symbols (category So), with their skin-tone modifiers
  (U+1F3FB-U+1F3FF), variation selectors, keycaps (U+20E3) and tag characters (U+E0020-U+E007F,
  the subdivision flags);
- the joiners ZWJ (U+200D) and ZWNJ (U+200C), as used in Persian, Indic scripts and emoji sequences,
  but only between two other characters (never first, last or doubled: an id is never invisible);
- the ASCII punctuation `-` `_` `.` `@` `:`.
A combining mark, modifier or tag never comes first, and the ids `.` and `..` are refused (a URL path
cannot carry them). Nothing else is allowed: no spaces, no `/` or `\\` (path separators), no `%`
(percent-escapes), no control or format characters, no `?` `#` or other URL delimiters.
Ids are case-sensitive.

Where it is enforced: on every creation (`Gallery.enroll` of a new subject, `POST /enroll`). Look-ups
(`get_subject`, `delete_subject`) accept any stored id: one written under an older, laxer rule is
matched exactly (then by its NFC form), so it stays readable and deletable -- over HTTP through the
admin path `/admin/subject?subject_id=...` (query strings carry any text), or with
`gaitid subjects delete`. `Gallery.subject_id_problems()` lists such ids; the service logs them at
start-up.
"""

from __future__ import annotations

import unicodedata

from gallery.errors import InvalidSubjectIdError

MAX_ID_CHARS = 128
# A look-up of a stored id accepts more than a new id may have (ids stored under older rules).
MAX_LOOKUP_CHARS = 1024

ASCII_PUNCTUATION = frozenset("-_.@:")
ZWNJ, ZWJ = "\u200c", "\u200d"
JOINERS = frozenset((ZWNJ, ZWJ))
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
_TAGS = range(0xE0020, 0xE0080)
_KEYCAP = "\u20e3"
RESERVED = frozenset((".", ".."))

RULE = ("1-128 letters, marks or digits of any script, emoji, the joiners ZWJ/ZWNJ between other characters, "
        "and - _ . @ : (no spaces, no / \\ %, no control characters, not . or ..)")


def _kind(char: str) -> str:
    """'base' (may start an id), 'extend' (marks, modifiers, tags: only after a base), 'joiner',
    'punct', or 'bad'."""
    if char in ASCII_PUNCTUATION:
        return "punct"
    if char in JOINERS:
        return "joiner"
    code = ord(char)
    if code in _EMOJI_MODIFIERS or code in _TAGS or char == _KEYCAP:
        return "extend"
    category = unicodedata.category(char)
    if category[0] in "LN" or category == "So":
        return "base"
    if category[0] == "M":  # combining marks, incl. variation selectors (Mn) and enclosing marks (Me)
        return "extend"
    return "bad"


def subject_id_problem(value: object) -> str | None:
    """Why `value` (already NFC) breaks the rule, or None when it follows it."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters (has {len(value)})"
    if unicodedata.normalize("NFC", value) != value:
        return "is not in Unicode normal form NFC"
    if value in RESERVED:
        return f"{value!r} is a relative path segment, which URLs cannot carry"
    previous = None
    for position, char in enumerate(value):
        kind = _kind(char)
        if kind == "bad":
            return f"character {position + 1} ({_describe(char)}) is not allowed"
        if kind == "extend" and previous is None:
            return f"must not start with a combining mark or modifier ({_describe(char)})"
        if kind == "joiner" and (previous in (None, "joiner") or position == len(value) - 1):
            return "ZWJ/ZWNJ may only stand between two other characters"
        previous = kind
    return None


def check_new_subject_id(value: object) -> str:
    """The NFC form of a subject id for a new subject, or InvalidSubjectIdError saying what is wrong."""
    normalised = unicodedata.normalize("NFC", value) if isinstance(value, str) else value
    problem = subject_id_problem(normalised)
    if problem is not None:
        raise InvalidSubjectIdError(value if isinstance(value, str) else repr(value), problem)
    assert isinstance(normalised, str)
    return normalised


def lookup_candidates(value: object) -> tuple[str, ...]:
    """The ids a look-up of `value` tries, in order: exactly as given, then its NFC form."""
    if not isinstance(value, str) or not value or len(value) > MAX_LOOKUP_CHARS:
        raise InvalidSubjectIdError(value if isinstance(value, str) else repr(value),
                                    f"must be a non-empty string of at most {MAX_LOOKUP_CHARS} characters")
    normalised = unicodedata.normalize("NFC", value)
    return (value,) if normalised == value else (value, normalised)


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "") + (f" {char!r}" if char.isprintable() else "")
