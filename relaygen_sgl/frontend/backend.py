"""RelayGen as an SGLang frontend backend: unmodified ``@sgl.function`` programs relay every ``sgl.gen``.

    backend = RelayBackend("http://127.0.0.1:30000", "http://127.0.0.1:30001", "profile.json")
    sgl.set_default_backend(backend)          # or program.run(..., backend=backend)

What goes where:

* ``sgl.gen``: the relay (the large model reasons, the small one finishes cue sentences and
  answers), with the sampling the interpreter resolved: ``.run(...)`` defaults, the gen's own
  values, the chat template's stop strings.  Streamed token by token with ``run(stream=True)``.
* a gen the relay cannot split (constrained decoding, logprobs, ``stop_regex``, ``stop_token_ids``,
  ``n > 1``, ``min_new_tokens``, images, ``max_new_tokens=0``) goes to one runtime as it came,
  through SGLang's own ``RuntimeEndpoint``: the rule of every entry point
  (:func:`relaygen_sgl.relay.request_rules.direct_reason`).
* ``sgl.select`` / ``sgl.gen(choices=...)``, ``cache_prefix`` and the fork-point prefill: the
  large runtime, through ``RuntimeEndpoint`` (the small model never scores choices).
* inside ``with single_model(s, "large"):`` every gen and select of that state goes to that one
  model (``large_only`` / ``small_only`` relay modes, so stats and streaming stay the same).

``s.get_meta_info(name)`` is SGLang's meta info with the relay stats under ``"relaygen"``
(``RelayStats.summary()``).  A runtime fault raises :class:`RelayError` naming the runtime inside
the interpreter, which records it as the program's ``error()``; a gen that did not stream leaves
nothing of itself in the state.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import ChatTemplate, get_chat_template
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod
from sglang.lang.interpreter import StreamExecutor
from sglang.lang.ir import SglSamplingParams

from relaygen_sgl.cues import MAX_STOP_REGEX_BYTES
from relaygen_sgl.frontend.prompts import conversation, render_for
from relaygen_sgl.frontend.sampling import DEFAULT_MAX_NEW_TOKENS, native_body
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import (
    Mode,
    RelayError,
    RelayMachine,
    RelayPair,
    RenderedPrompt,
    Role,
)
from relaygen_sgl.relay.pair import Handoff
from relaygen_sgl.relay.request_rules import direct_reason, meta_info, relay_config
from relaygen_sgl.runtime.client import AsyncRuntimeClient, RuntimeRequestError, RuntimeUnavailable

_Chunk = tuple[str, dict[str, Any]]  # (text, meta info), as backends give them to the interpreter
_SINGLE: dict[Role, Mode] = {"large": "large_only", "small": "small_only"}
_BACKEND_MODES = ("relay", "large_only", "small_only")


class RelayBackend(BaseBackend):
    """An SGLang frontend backend over two runtimes (URLs or ``RuntimeEndpoint`` s).

    ``profile``: a :class:`CueProfile`, a profile file or a bundled name (needed for
    ``mode="relay"``).  ``chat_template``: the large model's frontend template (a name such as
    ``"chatml"``, or a ``ChatTemplate``); by default SGLang's choice for the large model's path,
    or the endpoint's own.  The small model is given the same turns in its HF chat template
    (``chat_template_kwargs`` are passed to it, e.g. ``{"enable_thinking": False}``).
    ``mode="large_only"``/``"small_only"`` are the baselines.  The large runtime is asked for its
    model info now (as ``RuntimeEndpoint`` does); the small one at its first use, so programs that
    only touch the large model run while it is down.
    """

    def __init__(
        self,
        large: str | RuntimeEndpoint | Any,
        small: str | RuntimeEndpoint | Any,
        profile: CueProfile | str | Path | None = None,
        *,
        chat_template: str | ChatTemplate | None = None,
        mode: Mode = "relay",
        answer_model: Role = "small",
        handoff: Handoff = "auto",
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in _BACKEND_MODES:
            raise ValueError(f"mode must be one of {', '.join(_BACKEND_MODES)}, got {mode!r}")
        if answer_model not in ("large", "small"):
            raise ValueError(f"answer_model must be 'large' or 'small', got {answer_model!r}")
        self.profile = checked_profile(profile, mode)
        self.mode: Mode = mode
        self.answer_model: Role = answer_model
        self.handoff: Handoff = handoff
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.endpoints: dict[Role, RuntimeEndpoint | None] = {
            "large": _endpoint(large, "large"),
            "small": small if isinstance(small, RuntimeEndpoint) else None,  # made at first use
        }
        self.chat_template = _template(chat_template) or self.large.get_chat_template()
        self.pair = RelayPair(_client(large, "large"), _client(small, "small"))
        self._pins: dict[str, Role] = {}  # executor sid -> the one model its gens go to
        self._lock = threading.Lock()

    @property
    def large(self) -> RuntimeEndpoint:
        return self.endpoints["large"]  # type: ignore[return-value]

    # -- BaseBackend -----------------------------------------------------------------------
    def get_model_name(self) -> str:
        return self.large.get_model_name()

    def get_chat_template(self) -> ChatTemplate:
        return self.chat_template

    def cache_prefix(self, prefix_str: str) -> None:
        # run_batch's traced common prefix, rendered for the large model: the runtime that
        # prefills every program's first turn at once.  The small one caches it on first use.
        self.large.cache_prefix(prefix_str)

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        self.large.commit_lazy_operations(s)  # the fork point, for the forks' first large turns

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> _Chunk:
        single = self._pinned(s)
        body = native_body(sampling_params, s.text_, bool(s.images_))
        reason = direct_reason(body)
        if reason is not None:
            return self._direct(single or "large", s, sampling_params, reason)
        m = self._machine(s, body, single)
        r = self.pair.run(m)
        return r.text, meta_info(r, m.request_id)

    def generate_stream(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> Iterator[_Chunk]:
        single = self._pinned(s)
        body = native_body(sampling_params, s.text_, bool(s.images_))
        reason = direct_reason(body)
        if reason is not None:
            yield from self._direct_stream(single or "large", s, sampling_params, reason)
            return
        m = self._machine(s, body, single)
        with closing(self.pair.stream(m)) as deltas:  # closed early: the call in flight is aborted
            for d in deltas:
                yield d.text, {"id": m.request_id, "finish_reason": None, "relaygen_model": d.role}
        yield "", meta_info(m.result(), m.request_id)  # the deltas were all of the text

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod | None = None,
    ) -> ChoicesDecision:
        role = self._pinned(s) or "large"
        with self._faults(role):
            return self._endpoint(role).select(self._view(role, s), choices, temperature, choices_method)

    def end_program(self, s: StreamExecutor | list[StreamExecutor]) -> None:
        with self._lock:
            for exe in s if isinstance(s, list) else [s]:
                self._pins.pop(exe.sid, None)

    def flush_cache(self) -> None:
        self.pair.flush_cache()

    def get_server_info(self) -> dict[str, Any]:
        return self.large.get_server_info()

    def shutdown(self) -> None:
        self.pair.close()

    # -- single-model sections (see single_model) ------------------------------------------
    def pin(self, s: StreamExecutor, role: Role | None) -> Role | None:
        """Send ``s``'s gens to one model (None: relay again); returns the previous setting."""
        if role is not None and role not in _SINGLE:
            raise ValueError(f"role must be 'large' or 'small', got {role!r}")
        with self._lock:
            prev = self._pins.pop(s.sid, None)
            if role is not None:
                self._pins[s.sid] = role
            return prev

    def _pinned(self, s: StreamExecutor) -> Role | None:
        with self._lock:
            return self._pins.get(s.sid)

    # -- internals -------------------------------------------------------------------------
    def _machine(self, s: StreamExecutor, body: dict[str, Any], single: Role | None) -> RelayMachine:
        mode = _SINGLE[single] if single else self.mode
        config = relay_config(
            body, mode=mode, answer_model=self.answer_model, default_max_tokens=DEFAULT_MAX_NEW_TOKENS
        )
        prompts = {"large": RenderedPrompt(s.text_, templated=False)}
        if mode != "large_only":
            prompts["small"] = self._small_prompt(s)
        return self.pair.prepare(config, prompts, profile=self.profile, handoff=self.handoff)

    def _small_prompt(self, s: StreamExecutor) -> RenderedPrompt:
        conv = conversation(s.text_, s.messages_, s.cur_role, s.cur_role_begin_pos, self.chat_template)
        if conv is not None and conv.plain:
            return RenderedPrompt(s.text_, templated=False)
        text = None
        if conv is not None:
            try:
                tokenizer = self.pair.tokenizer("small")
            except (RuntimeUnavailable, RuntimeRequestError) as e:
                raise RelayError(f"could not prepare the relay: {e}", "small") from e
            text = render_for(
                conv,
                tokenizer,
                chat_template_kwargs=self.chat_template_kwargs,
                frontend_default_system=self.chat_template.default_system_prompt,
            )
        if text is None:
            warnings.warn(
                "relaygen: this program's text is not turns of its chat template (text between "
                "turns, an image, or a non-assistant turn left open), so the small model gets "
                "the large model's chat template",
                stacklevel=2,
            )
            return RenderedPrompt(s.text_, templated=False)
        return RenderedPrompt(text, templated=True)

    def _view(self, role: Role, s: StreamExecutor) -> Any:
        """What RuntimeEndpoint reads of a state, with ``role``'s prompt as its text."""
        return s if role == "large" else _View(self._small_prompt(s).text, s.images_)

    def _endpoint(self, role: Role) -> RuntimeEndpoint:
        with self._lock:
            if self.endpoints[role] is None:
                self.endpoints[role] = _endpoint(self.pair.clients[role].url, role)
            return self.endpoints[role]  # type: ignore[return-value]

    @contextmanager
    def _faults(self, role: Role) -> Iterator[None]:
        """Faults of a call through SGLang's RuntimeEndpoint, as a RelayError naming the runtime."""
        try:
            yield
        except RelayError:
            raise
        except (OSError, RuntimeError) as e:  # urllib/requests errors, or a non-200 answer
            raise RelayError(f"{role} runtime at {self.pair.clients[role].url} failed: {e}", role) from e

    def _direct(self, role: Role, s: StreamExecutor, sp: SglSamplingParams, reason: str) -> _Chunk:
        with self._faults(role):
            text, meta = self._endpoint(role).generate(self._view(role, s), sp)
        return text, {**meta, "relaygen": _direct_info(role, reason)}

    def _direct_stream(
        self, role: Role, s: StreamExecutor, sp: SglSamplingParams, reason: str
    ) -> Iterator[_Chunk]:
        info = _direct_info(role, reason)
        with self._faults(role):
            for text, meta in self._endpoint(role).generate_stream(self._view(role, s), sp):
                yield text, {**meta, "relaygen": info}


@contextmanager
def single_model(s: Any, role: Role = "large") -> Iterator[None]:
    """Inside this block, the gens and selects of program state ``s`` go to one model.

        with single_model(s, "large"):
            s += sgl.user("The final number only.") + sgl.assistant(sgl.gen("number", max_tokens=8))

    A no-op under other backends and in ``trace()``, so the program stays portable.  It holds
    for ``s`` only: a fork made inside it relays unless it has its own ``single_model``.
    """
    if role not in _SINGLE:
        raise ValueError(f"role must be 'large' or 'small', got {role!r}")
    exe = getattr(s, "stream_executor", None)
    backend = getattr(exe, "backend", None)
    if not isinstance(backend, RelayBackend):
        yield
        return
    # The interpreter runs expressions on its own thread: wait until the ones before the block
    # have run, and until the block's own have, so the setting covers exactly the block.
    exe.sync()
    prev = backend.pin(exe, role)
    try:
        yield
    finally:
        exe.sync()
        backend.pin(exe, prev)


class _View:
    def __init__(self, text: str, images: list[Any]) -> None:
        self.text_ = text
        self.images_ = images


def checked_profile(profile: CueProfile | str | Path | None, mode: Mode) -> CueProfile | None:
    """The profile, refused now if SGLang would refuse its stop_regex at the first request."""
    if isinstance(profile, (str, Path)):
        profile = CueProfile.load(profile)
    if profile is None:
        if mode == "relay":
            raise ValueError("mode='relay' needs a cue profile")
        return None
    name = profile.name or f"{profile.large_model}__{profile.small_model}"
    try:
        profile.stop_regexes()
    except ValueError as e:
        raise ValueError(f"profile {name!r}: {e}") from e
    if len(profile.sentence_end_regex.encode()) > MAX_STOP_REGEX_BYTES:
        raise ValueError(
            f"profile {name!r}: sentence_end_regex is over SGLang's {MAX_STOP_REGEX_BYTES} bytes"
        )
    return profile


def _direct_info(role: Role, reason: str) -> dict[str, Any]:
    return {"mode": "direct", "role": role, "reason": reason}


def _template(t: str | ChatTemplate | None) -> ChatTemplate | None:
    return get_chat_template(t) if isinstance(t, str) else t


def _url(runtime: Any) -> str:
    if isinstance(runtime, RuntimeEndpoint):
        return runtime.base_url
    url = runtime if isinstance(runtime, str) else getattr(runtime, "url", None)
    if not isinstance(url, str):
        raise TypeError(f"expected a URL, RuntimeEndpoint or SGLangRuntime, got {runtime!r}")
    return url


def _client(runtime: Any, name: Role) -> AsyncRuntimeClient:
    key = getattr(runtime, "api_key", None)  # a RuntimeEndpoint's
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return AsyncRuntimeClient(_url(runtime), name=name, headers=headers)


def _endpoint(runtime: Any, name: Role) -> RuntimeEndpoint:
    if isinstance(runtime, RuntimeEndpoint):
        return runtime
    url = _url(runtime)
    try:
        return RuntimeEndpoint(url)
    except (OSError, RuntimeError) as e:
        raise RelayError(f"{name} runtime at {url} is not answering: {e}", name) from e
