"""RelayGen inside SGLang frontend programs.

``relay_gen(s, "name")`` is used like ``s += sgl.gen("name")`` in an
``@sgl.function``: it takes the program state's text so far as the prompt,
runs the relay with the state's backend as the large runtime and a second
runtime as the small one, appends the relayed output to the state and stores
it under ``name`` (relay stats under ``s.get_meta_info(name)``).  Forks,
``run_batch`` and later ``sgl.gen``/``sgl.select`` calls work as usual.

    relaygen_sgl.configure(small="http://127.0.0.1:30001", profile="profile.json")

    @sgl.function
    def solve(s, question):
        s += sgl.user(question)
        s += sgl.assistant_begin()
        relay_gen(s, "solution", max_tokens=2048)
        s += sgl.assistant_end()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import Mode, RelayResult, Role, relay_generate


@dataclass
class RelayDefaults:
    small: Any = None
    large: Any = None  # None: the program state's own backend
    profile: CueProfile | None = None
    max_tokens: int = 2048
    answer_model: Role = "small"
    mode: Mode = "relay"
    sampling: dict[str, Any] = field(default_factory=dict)


_DEFAULTS = RelayDefaults()


def configure(
    *,
    small: Any = None,
    large: Any = None,
    profile: CueProfile | str | Path | None = None,
    max_tokens: int | None = None,
    answer_model: Role | None = None,
    mode: Mode | None = None,
    sampling: dict[str, Any] | None = None,
) -> RelayDefaults:
    """Set process-wide defaults for :func:`relay_gen` (None leaves a field as it is)."""
    if isinstance(profile, (str, Path)):
        profile = CueProfile.load(profile)
    given = dict(small=small, large=large, profile=profile, max_tokens=max_tokens,
                 answer_model=answer_model, mode=mode, sampling=sampling)  # fmt: skip
    for key, value in given.items():
        if value is not None:
            setattr(_DEFAULTS, key, value)
    return _DEFAULTS


def _backend_url(s: Any) -> str:
    backend = s.stream_executor.backend
    url = getattr(backend, "base_url", None)
    if not isinstance(url, str):
        raise TypeError(
            "relay_gen needs the program's backend to be an SGLang RuntimeEndpoint "
            f"(got {type(backend).__name__}); or pass large=URL"
        )
    return url


def relay_gen(s: Any, name: str, **overrides: Any) -> RelayResult:
    """Relay-generate from the program state ``s`` and append the output to it.

    Keyword arguments override :func:`configure` defaults (``small``, ``large``,
    ``profile``, ``max_tokens``, ``answer_model``, ``mode``, ``sampling``);
    any other keyword (``temperature=0.6``...) is a sampling parameter.
    """
    opts = {k: overrides.pop(k, getattr(_DEFAULTS, k)) for k in RelayDefaults.__dataclass_fields__}
    sampling = {**opts.pop("sampling"), **overrides}
    if opts["small"] is None:
        raise ValueError("relay_gen needs a small runtime: relaygen_sgl.configure(small=URL)")
    if isinstance(opts["profile"], (str, Path)):
        opts["profile"] = CueProfile.load(opts["profile"])
    large = opts.pop("large") or _backend_url(s)
    result = relay_generate(s.text(), large=large, sampling=sampling, **opts)
    s += result.text
    s.set_var(name, result.text)
    s.stream_executor.meta_info[name] = result.stats.to_dict()
    return result
