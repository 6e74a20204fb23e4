"""Cue profiles: the calibrated switching rules for one (large, small) model pair.

A profile is a JSON file.  Loading validates every field and names the one that
is wrong, so a hand-edited profile fails loudly before any server is touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from relaygen_sgl.cues import (
    MAX_STOP_REGEX_BYTES,
    SENTENCE_END_REGEX,
    CueMatcher,
    stop_regexes,
)

PROFILE_VERSION = 1
PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A cue profile is malformed; the message names the field."""


@dataclass(frozen=True)
class Cue:
    text: str
    delta: float | None = None  # mean margin in cue segments minus elsewhere
    count: int | None = None  # occurrences in the calibration traces
    ci: tuple[float, float] | None = None  # bootstrap confidence interval of delta


@dataclass(frozen=True)
class CueProfile:
    large_model: str
    small_model: str
    cues: tuple[Cue, ...]  # the cues the relay switches on
    name: str = ""
    case_sensitive: bool = True
    sentence_end_regex: str = SENTENCE_END_REGEX
    min_large_tokens: int = 5
    max_small_tokens: int = 64
    provenance: dict[str, Any] = field(default_factory=dict)
    # Every scored cue, kept ones first, each group by delta: the dial that top_cues() turns.
    ranking: tuple[Cue, ...] = ()
    version: int = PROFILE_VERSION

    @property
    def cue_texts(self) -> list[str]:
        return [c.text for c in self.cues]

    @property
    def ranked(self) -> tuple[Cue, ...]:
        """The cues in rank order: the calibrated ranking, else the profile's own list."""
        return self.ranking or self.cues

    def top_cues(self, k: int) -> CueProfile:
        """This profile switching on its best ``k`` cues.  ``k`` above the kept set reaches down
        the ranking (more switches, a lower large-model share); below it, fewer switches."""
        n = len(self.ranked)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ProfileError(
                f"top_cues must be an integer from 1 to {n} (the profile "
                f"{self.name or self.large_model!r} ranks {n} cues), got {k!r}"
            )
        # The ranking stays whole, so a narrowed profile can be widened again (per request, say).
        return replace(
            self, cues=self.ranked[:k], ranking=self.ranked, name=f"{self.name}@top{k}" if self.name else ""
        )

    def pair_mismatch(self, large: str, small: str) -> str | None:
        """A warning when the running models (paths or ids) do not look like the profile's pair."""
        bad = [
            f"{role} runtime serves {got!r} but the profile was calibrated for {want!r}"
            for role, want, got in (("large", self.large_model, large), ("small", self.small_model, small))
            if _model_key(want) not in _model_key(got)
        ]
        return f"profile {self.name or '(unnamed)'}: " + "; ".join(bad) if bad else None

    def stop_regexes(self) -> list[str]:
        return stop_regexes(self.cue_texts, self.case_sensitive)

    def matcher(self) -> CueMatcher:
        return CueMatcher(self.cue_texts, self.case_sensitive)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("cues", "ranking"):
            d[key] = [
                {k: (list(v) if k == "ci" else v) for k, v in asdict(c).items() if v is not None}
                for c in getattr(self, key)
            ]
        if not d["ranking"]:
            del d["ranking"]
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> CueProfile:
        return _validate(data, source)

    @classmethod
    def load(cls, path_or_name: str | Path) -> CueProfile:
        """Load a profile file, or a bundled one by name (e.g. ``"paper-qwen3-32b-1.7b"``)."""
        path = Path(path_or_name)
        if not path.exists() and (PROFILES_DIR / f"{path_or_name}.json").exists():
            path = PROFILES_DIR / f"{path_or_name}.json"
        if not path.exists():
            bundled = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.json")))
            raise ProfileError(f"{path}: no such profile file (bundled profiles: {bundled})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ProfileError(f"{path}: not valid JSON ({e})") from e
        return _validate(data, str(path))


def _model_key(name: str) -> str:
    """A model's id or folder reduced to what identifies it: "Qwen/Qwen3-32B" -> "qwen3-32b",
    "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)" -> "qwen2.5-coder-1.5b-instruct"."""
    first = name.strip().split(" ", 1)[0] if name.strip() else ""
    return first.rstrip("/").rsplit("/", 1)[-1].lower()


def bundled_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def _fail(source: str, fld: str, why: str) -> ProfileError:
    return ProfileError(f"{source}: field '{fld}' {why}")


def _validate(data: Any, source: str) -> CueProfile:
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a JSON object")
    known = set(CueProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(source, unknown[0], f"is not a profile field (known: {', '.join(sorted(known))})")
    for fld in ("large_model", "small_model"):
        if not isinstance(data.get(fld), str) or not data[fld].strip():
            raise _fail(source, fld, "must be a non-empty string")
    version = data.get("version", PROFILE_VERSION)
    if version != PROFILE_VERSION:
        raise _fail(source, "version", f"must be {PROFILE_VERSION}, got {version!r}")
    raw_cues = data.get("cues")
    if not isinstance(raw_cues, list):
        raise _fail(source, "cues", "must be a list of cue strings or objects")
    cues: list[Cue] = []
    for i, raw in enumerate(raw_cues):
        cues.append(_validate_cue(raw, source, f"cues[{i}]"))
    _no_repeats(cues, source, "cues")
    raw_ranking = data.get("ranking", [])
    if not isinstance(raw_ranking, list):
        raise _fail(source, "ranking", "must be a list of cue objects")
    ranking = [_validate_cue(raw, source, f"ranking[{i}]") for i, raw in enumerate(raw_ranking)]
    _no_repeats(ranking, source, "ranking")
    top = [c.text for c in ranking[: len(cues)]]
    if ranking and sorted(top) != sorted(c.text for c in cues):
        raise _fail(source, "ranking", "must start with the profile's cues (the kept set ranks first)")
    case_sensitive = data.get("case_sensitive", True)
    if not isinstance(case_sensitive, bool):
        raise _fail(source, "case_sensitive", "must be true or false")
    for fld, default, low in (("min_large_tokens", 5, 0), ("max_small_tokens", 64, 1)):
        v = data.get(fld, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise _fail(source, fld, f"must be an integer >= {low}, got {v!r}")
    sentence_end = data.get("sentence_end_regex", SENTENCE_END_REGEX)
    if not isinstance(sentence_end, str) or not sentence_end:
        raise _fail(source, "sentence_end_regex", "must be a non-empty regex string")
    try:
        re.compile(sentence_end)
    except re.error as e:
        raise _fail(source, "sentence_end_regex", f"is not a valid regex ({e})") from e
    if len(sentence_end.encode()) > MAX_STOP_REGEX_BYTES:
        raise _fail(source, "sentence_end_regex", f"is over SGLang's {MAX_STOP_REGEX_BYTES} bytes")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise _fail(source, "provenance", "must be an object")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise _fail(source, "name", "must be a string")
    profile = CueProfile(
        large_model=data["large_model"],
        small_model=data["small_model"],
        cues=tuple(cues),
        name=name,
        case_sensitive=case_sensitive,
        sentence_end_regex=sentence_end,
        min_large_tokens=data.get("min_large_tokens", 5),
        max_small_tokens=data.get("max_small_tokens", 64),
        provenance=provenance,
        ranking=tuple(ranking),
    )
    try:
        profile.stop_regexes()
    except ValueError as e:
        raise _fail(source, "cues", str(e)) from e
    return profile


def _no_repeats(cues: list[Cue], source: str, fld: str) -> None:
    texts = [c.text for c in cues]
    if len(set(texts)) != len(texts):
        dup = next(t for t in texts if texts.count(t) > 1)
        raise _fail(source, fld, f"lists {dup!r} twice")


def _validate_cue(raw: Any, source: str, where: str) -> Cue:
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a string or an object with 'text'")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _fail(source, f"{where}.text", "must be a non-empty string")
    if text != text.strip():
        raise _fail(source, f"{where}.text", f"has surrounding whitespace: {text!r}")
    extra = sorted(set(raw) - {"text", "delta", "count", "ci"})
    if extra:
        raise _fail(source, f"{where}.{extra[0]}", "is not a cue field (text, delta, count, ci)")
    delta, count, ci = raw.get("delta"), raw.get("count"), raw.get("ci")
    if delta is not None and not isinstance(delta, (int, float)):
        raise _fail(source, f"{where}.delta", "must be a number")
    if count is not None and (not isinstance(count, int) or count < 0):
        raise _fail(source, f"{where}.count", "must be a non-negative integer")
    if ci is not None:
        if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci)):
            raise _fail(source, f"{where}.ci", "must be [low, high]")
        ci = (float(ci[0]), float(ci[1]))
    return Cue(text=text, delta=None if delta is None else float(delta), count=count, ci=ci)
