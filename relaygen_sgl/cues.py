"""Cue and sentence-end matching, shared by calibration and the relay loop.

Two rules fix flaws of the reference implementation:

* a cue matches at word boundaries only ("now" inside "know" is no cue), and a
  cue without trailing punctuation needs the character after it to be a
  non-word one, so "So" never fires on the first two letters of "Some";
* a sentence ends at ``!``, ``?``, a blank line, or a ``.`` that is not inside a
  decimal (``3.5``) or an abbreviation (``e.g.``, ``i.e.``, ``vs.``, ``Fig.``...).

Patterns are written for Python's ``re`` because SGLang evaluates
``stop_regex`` with ``re.search`` over the decoded tail of the output.  The cue
regexes sent to SGLang use no lookarounds: SGLang sizes that tail from the
pattern's maximum length and treats lookarounds as unbounded, which would
re-decode the whole output at every step.  They consume the boundary characters
instead, so a cue at the very first character of a request's output (nothing
before it to check) does not fire; BPE tokens carry their leading space, so in
practice only a cue glued to the previous segment is affected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# SGLang 0.5.23 limits (sglang/srt/sampling/sampling_params.py).
MAX_STOP_REGEX_COUNT = 32
MAX_STOP_REGEX_BYTES = 256

_WORD = "A-Za-z0-9_"
_NOT_AFTER_WORD = f"(?<![{_WORD}])"  # Python-side matcher
_FOLLOWED_BY_NON_WORD = f"(?=[^{_WORD}])"
_NON_WORD = f"[^{_WORD}]"  # SGLang-side: consumed, so the pattern stays bounded

# A '.' ends a sentence unless it sits in an abbreviation; after a digit it
# must be followed by whitespace, so "3.5" never ends one and "is 3." does.
_ABBREV_GUARDS = (
    r"(?<![0-9])"
    r"(?<!\b[eiEI])"  # first dot of e.g. / i.e.
    r"(?<![eiEI]\.[eg])"  # second dot of e.g. / i.e.
    r"(?<!\b(?:vs|cf|Dr|Mr|Ms|St|Eq|al))"
    r"(?<!\b(?:Fig|etc|Mrs|eqn))"
    r"(?<!\bapprox)"
)
SENTENCE_END_REGEX = r"[!?]|\n[ \t]*\n|(?<=[0-9])\.(?=\s)|" + _ABBREV_GUARDS + r"\."
_SENTENCE_END = re.compile(SENTENCE_END_REGEX)


def sentence_end(text: str, start: int = 0) -> int | None:
    """Index just past the first sentence end in ``text[start:]``, or None."""
    m = _SENTENCE_END.search(text, start)
    if m is None:
        return None
    # A decimal-style '.' is confirmed by the whitespace after it; keep only the '.'.
    return m.end()


def _cue_body(cue: str) -> str:
    parts = [re.escape(p) for p in cue.split()]
    return " ".join(parts)


def cue_pattern(cue: str) -> str:
    """Regex source for one cue, matching at word boundaries only."""
    cue = cue.strip()
    if not cue:
        raise ValueError("empty cue")
    body = _cue_body(cue)
    if re.match(rf"[{_WORD}]", cue[-1]):
        return f"{_NOT_AFTER_WORD}{body}{_FOLLOWED_BY_NON_WORD}"
    return f"{_NOT_AFTER_WORD}{body}"


def stop_regexes(cues: Sequence[str], case_sensitive: bool = True) -> list[str]:
    """Merge cues into as few alternations as SGLang's stop_regex limits allow."""
    if not cues:
        return []
    flag = "" if case_sensitive else "(?i)"
    word_end = [_cue_body(c.strip()) for c in cues if re.match(rf"[{_WORD}]", c.strip()[-1])]
    punct_end = [_cue_body(c.strip()) for c in cues if not re.match(rf"[{_WORD}]", c.strip()[-1])]
    out: list[str] = []
    for bodies, tail in ((word_end, _NON_WORD), (punct_end, "")):
        chunk: list[str] = []
        for body in bodies:
            candidate = _wrap(flag, chunk + [body], tail)
            if chunk and len(candidate.encode()) > MAX_STOP_REGEX_BYTES:
                out.append(_wrap(flag, chunk, tail))
                chunk = [body]
            else:
                chunk.append(body)
        if chunk:
            out.append(_wrap(flag, chunk, tail))
    for pattern in out:
        if len(pattern.encode()) > MAX_STOP_REGEX_BYTES:
            raise ValueError(f"cue too long for SGLang stop_regex ({MAX_STOP_REGEX_BYTES} bytes)")
    if len(out) > MAX_STOP_REGEX_COUNT:
        raise ValueError(
            f"{len(cues)} cues need {len(out)} stop regexes; SGLang allows {MAX_STOP_REGEX_COUNT}"
        )
    return out


def _wrap(flag: str, bodies: Iterable[str], tail: str) -> str:
    # Longest first, so "Now," wins over "Now" when both are cues.
    alts = "|".join(sorted(bodies, key=len, reverse=True))
    return f"{flag}{_NON_WORD}(?:{alts}){tail}"


@dataclass(frozen=True)
class CueMatch:
    cue: str
    start: int
    end: int


class CueMatcher:
    """Finds cues in text with the same rules the runtime's stop_regex uses."""

    def __init__(self, cues: Sequence[str], case_sensitive: bool = True) -> None:
        self.cues = [c.strip() for c in cues]
        flags = 0 if case_sensitive else re.IGNORECASE
        self._patterns = [(c, re.compile(cue_pattern(c), flags)) for c in self.cues]
        self.case_sensitive = case_sensitive

    def find_all(self, text: str) -> list[CueMatch]:
        """Non-overlapping matches, leftmost first; longer cues win ties."""
        hits = [
            CueMatch(cue, m.start(), m.start() + len(m.group(0)))
            for cue, pat in self._patterns
            for m in pat.finditer(text)
        ]
        hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
        out: list[CueMatch] = []
        for h in hits:
            if not out or h.start >= out[-1].end:
                out.append(h)
        return out

    def first(self, text: str, start: int = 0) -> CueMatch | None:
        for h in self.find_all(text):
            if h.start >= start:
                return h
        return None

    def last(self, text: str) -> CueMatch | None:
        hits = self.find_all(text)
        return hits[-1] if hits else None
