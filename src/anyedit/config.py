"""Typed, validated configuration objects that round-trip to JSON.

Every config is a frozen dataclass validated in ``__post_init__``; a bad value raises
:class:`~anyedit.errors.ConfigError` naming the field and the value. ``to_dict``/``from_dict``
round-trip through plain JSON types; unknown keys are dropped with a warning.

Method-specific settings live in a backend config class registered under the method name
(:func:`register_method`, the one method registry), so :class:`EditConfig` stays one object for every method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound="Config")

ChunkMode = Literal["window", "sentence", "none"]
AnchorMode = Literal["prompt_end", "question_end", "question", "subject_last"]
DTypeName = Literal["float32", "float64", "bfloat16", "float16"]


def fail(cls: type, name: str, value: Any, why: str) -> None:
    """Raise the one error of a bad config value: ``ConfigError("Class.field=value: why")``."""
    raise ConfigError(f"{cls.__name__}.{name}={value!r}: {why}")


class Config:
    """Base of every config dataclass: JSON round-trip (``to_dict`` / ``from_dict`` / ``to_json`` /
    ``from_json``); subclasses validate their fields in ``__post_init__`` with the ``check_*`` helpers."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(f"{cls.__name__}: ignoring unknown keys {unknown}", stacklevel=2)
        kwargs: dict[str, Any] = {}
        for name in known & set(data):
            kwargs[name] = _coerce(hints[name], data[name], cls, name)
        try:
            return cls(**kwargs)
        except TypeError as e:  # wrong type for a field that validation did not catch
            raise ConfigError(f"{cls.__name__}: {e}") from None

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))


def _coerce(hint: Any, value: Any, cls: type, name: str) -> Any:
    """Turn JSON values into the declared field type (nested configs, tuples)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(non_none[0], value, cls, name)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(cls, name, value, "expected a list")
        return tuple(value)
    return value


def check_int(cls: type, name: str, v: Any, minimum: int = 1) -> None:
    """An integer (not a bool) >= ``minimum``."""
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        fail(cls, name, v, f"must be an integer >= {minimum}")


def check_number(cls: type, name: str, v: Any, allow_zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with ``allow_zero``)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        fail(cls, name, v, "must be a finite number")
    if v < 0 or (v == 0 and not allow_zero):
        fail(cls, name, v, "must be >= 0" if allow_zero else "must be > 0")


def check_choice(cls: type, name: str, v: Any, choices: tuple[str, ...]) -> None:
    """One of ``choices``."""
    if v not in choices:
        fail(cls, name, v, f"must be one of {', '.join(choices)}")


def check_bool(cls: type, name: str, v: Any) -> None:
    """``True`` or ``False``."""
    if not isinstance(v, bool):
        fail(cls, name, v, "must be true or false")


@dataclass(frozen=True)
class PromptConfig(Config):
    """How a question becomes model input.

    ``chat_template=None`` uses the tokenizer's chat template when it has one (instruct models) and raw
    text otherwise; ``True`` requires a template, ``False`` edits raw text (base models).
    ``system_prompt=None`` keeps the template's default system turn (if any).
    """

    chat_template: bool | None = None
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.chat_template not in (None, True, False):
            fail(type(self), "chat_template", self.chat_template, "must be true, false or null")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            fail(type(self), "system_prompt", self.system_prompt, "must be a string or null")


@dataclass(frozen=True)
class ChunkingConfig(Config):
    """Paper Step 1: how the answer is split into chunks, and where each chunk's vector sits.

    * ``mode="window"``: sliding window of ``window`` tokens with ``overlap`` tokens of overlap.
    * ``mode="sentence"``: chunks end at sentence / line boundaries; sentences are merged up to
      ``window`` tokens and longer sentences are split at ``window`` tokens.
    * ``mode="none"``: the single-token baseline: one chunk (the whole answer), one edited position.

    ``first_anchor`` places the first chunk's vector on the last prompt token (``"prompt_end"``, the
    paper's placement, which for chat models is the template's last token), on the question's last
    token (``"question_end"``), spreads it over every question token (``"question"``, one vector per
    token, optimised jointly), or puts it on the last token of the request's ``subject`` (``"subject_last"``,
    the original MEMIT/ROME placement; every request must then name a subject); later chunks are anchored on the
    token before the chunk (the paper's placement), or with ``anchor_span`` = s > 1 their vector is spread over
    the s tokens before the chunk (one vector per token, optimised jointly; never reaching back to the previous
    chunk's anchors). More positions give the search more freedom: on the default model a 20-token chunk reached
    the argmax margin in about half the Adam steps with 6 positions, each vector smaller.

    ``snap`` > 0 moves each boundary between chunks by up to ``snap`` tokens (either way) so that the
    chunk's anchor is the token whose MLP key at the value layer is cheapest to edit: the largest
    ``k^T C^-1 k`` under the key statistics ``C``. A window boundary that falls after a generic token
    ("the", ",") otherwise puts the chunk's vector on a key that nearly every text shares, which a
    regularised update cannot move without moving all of them. Needs ``overlap=0`` and ``2 * snap < window``.

    ``first_window`` > 0 splits the first chunk after that many tokens: only they are tied to the question (the
    first anchor); the rest is anchored on the answer's own tokens, which every wording of the question is followed
    by once the answer has started.

    ``skip_preserve_prefix`` (with ``first_anchor="question"``): the first chunk is not spread over the leading
    question tokens that also begin a preservation prompt (``EditConfig.preserve``), e.g. "What is the" in "What
    is the country of citizenship of ...". Their hidden states are the same in every question that begins so, so
    a target there moves all of those answers and contradicts the preservation term.

    ``shared_prefix`` (with ``first_anchor="question"``): the first chunk is not spread over the leading question
    tokens its text shares with another edit's text, where the two edits' targets would contradict each other:
    ``"all"`` counts the earlier members of the stack (an ``EditHistory``) and the other requests of the same
    batch, ``"earlier"`` only the earlier members (a batch spreads every request over its whole question, as
    consolidating a stack does), ``"none"`` neither.
    """

    mode: ChunkMode = "window"
    window: int = 40
    overlap: int = 0
    first_anchor: AnchorMode = "prompt_end"
    snap: int = 0
    anchor_span: int = 1
    first_window: int = 0
    skip_preserve_prefix: bool = False
    shared_prefix: str = "all"

    def __post_init__(self) -> None:
        c = type(self)
        check_choice(c, "mode", self.mode, ("window", "sentence", "none"))
        check_int(c, "window", self.window)
        check_int(c, "overlap", self.overlap, minimum=0)
        if self.overlap >= self.window:
            fail(c, "overlap", self.overlap, f"must be smaller than window ({self.window})")
        check_choice(c, "first_anchor", self.first_anchor, ("prompt_end", "question_end", "question", "subject_last"))
        check_int(c, "snap", self.snap, minimum=0)
        check_int(c, "anchor_span", self.anchor_span)
        check_int(c, "first_window", self.first_window, minimum=0)
        check_bool(c, "skip_preserve_prefix", self.skip_preserve_prefix)
        check_choice(c, "shared_prefix", self.shared_prefix, ("all", "earlier", "none"))
        if self.snap and self.overlap:
            fail(c, "snap", self.snap, f"needs overlap=0 (got overlap={self.overlap})")
        if self.snap and 2 * self.snap >= self.window:
            fail(c, "snap", self.snap, f"must be smaller than half the window ({self.window})")


@dataclass(frozen=True)
class ValueConfig(Config):
    """Paper Step 3 (Eq. 9): optimisation of each chunk's residual-stream vector.

    Defaults are the reference code's. The vector is added to the output of decoder layer
    ``layer`` (default: the last edited layer). Loss = mean NLL of the chunk +
    ``weight_decay * |delta| / |h|^2``; stop when the loss is below ``stop_loss`` (and, if set, every
    token's NLL is below ``stop_token_nll``: a low mean can hide one token that greedy decoding gets wrong)
    or after ``max_steps`` Adam steps; after each step ``|delta|`` is clamped to ``clamp_norm * |h|``.
    ``stop_margin`` (optional) also stops a chunk as soon as every one of its tokens is the model's argmax by at
    least that margin in log-probability over the runner-up (greedy decoding needs only the argmax; ENCORE's
    "most probable" stop), whatever the NLL.
    (The reference's loop of 25 iterations ends on the last one before stepping, so it makes at most 24
    steps; ``max_steps=24`` reproduces that count.)
    ``cache_prefix`` reuses the states that the vector cannot change (exact; see values.py).
    ``joint`` optimises all chunks' vectors of a request at once, one pass over the whole answer per step (loss:
    the sum of the chunks' losses; a done chunk's vectors hold still), instead of one chunk after another with
    the earlier chunks' vectors fixed: larger matrix products and as many steps as the slowest chunk needs.
    """

    layer: int | None = None
    lr: float = 0.5
    max_steps: int = 25
    weight_decay: float = 1e-3
    clamp_norm: float = 4.0
    stop_loss: float = 1e-2
    stop_token_nll: float | None = None
    stop_margin: float | None = None
    cache_prefix: bool = True
    joint: bool = False

    def __post_init__(self) -> None:
        c = type(self)
        if self.layer is not None:
            check_int(c, "layer", self.layer, minimum=0)
        check_number(c, "lr", self.lr)
        check_int(c, "max_steps", self.max_steps, minimum=0)
        check_number(c, "weight_decay", self.weight_decay, allow_zero=True)
        check_number(c, "clamp_norm", self.clamp_norm)
        check_number(c, "stop_loss", self.stop_loss, allow_zero=True)
        if self.stop_token_nll is not None:
            check_number(c, "stop_token_nll", self.stop_token_nll)
        if self.stop_margin is not None:
            check_number(c, "stop_margin", self.stop_margin, allow_zero=True)
        check_bool(c, "cache_prefix", self.cache_prefix)
        check_bool(c, "joint", self.joint)


@dataclass(frozen=True)
class StatsConfig(Config):
    """Second-moment statistics C = E[k k^T] of the MLP keys, per edited layer.

    ``corpus``: ``"wikipedia-offline"`` (the English Wikipedia sample shipped in gensim's test data,
    no download), ``"model-samples"`` (text sampled from the model itself), a path to a ``.txt`` /
    ``.jsonl`` file, or ``"hf:<dataset>[:<config>]"`` (needs the ``datasets`` package and network).
    """

    corpus: str = "wikipedia-offline"
    n_tokens: int = 100_000
    max_len: int = 256
    batch_size: int = 4
    dtype: DTypeName = "float32"

    def __post_init__(self) -> None:
        c = type(self)
        if not isinstance(self.corpus, str) or not self.corpus.strip():
            fail(c, "corpus", self.corpus, "must be a non-empty string")
        check_int(c, "n_tokens", self.n_tokens)
        check_int(c, "max_len", self.max_len, minimum=2)
        check_int(c, "batch_size", self.batch_size)
        check_choice(c, "dtype", self.dtype, ("float32", "float64", "bfloat16", "float16"))


@dataclass(frozen=True)
class PreserveConfig(Config):
    """The generic chat conversations an edit is told to keep (see preserve.py).

    ``n_prompts`` conversations: each prompt from ``prompts`` (``"builtin"`` or a file of questions) in
    the chat template, followed by the model's own greedy answer of up to ``answer_tokens`` tokens.
    How strongly they are kept is a backend setting (``preserve_weight``).
    """

    prompts: str = "builtin"
    n_prompts: int = 1000
    answer_tokens: int = 48

    def __post_init__(self) -> None:
        c = type(self)
        if not isinstance(self.prompts, str) or not self.prompts:
            fail(c, "prompts", self.prompts, "must be 'builtin' or a file path")
        check_int(c, "n_prompts", self.n_prompts)
        check_int(c, "answer_tokens", self.answer_tokens)


@dataclass(frozen=True)
class PhrasingConfig(Config):
    """Other wordings of each question, edited together with it (for paraphrase generalisation).

    Besides a request's own ``phrasings`` (written by the user), ``generate`` rewordings are asked of the
    model itself before the edit (sampled at ``temperature``, seeded), and ``prefixes`` variants put a
    short text the model generates (``prefix_tokens`` tokens, MEMIT's context templates) in front of the
    question. Every variant is edited with the same answer. With ``warm_start`` a variant's vectors start
    from the main wording's, so chunks that already carry over cost one forward pass. A benchmark's
    paraphrases are never used for this.

    ``other_questions`` > 0: the answer is also edited after that many unrelated questions (drawn, seeded, from
    the preservation prompts), but only from its second chunk on: under another wording the answer's later chunks
    must fire on the answer text before them, whatever the question; the first chunk stays tied to this question.
    """

    generate: int = 0
    prefixes: int = 0
    prefix_tokens: int = 10
    temperature: float = 0.7
    seed: int = 0
    warm_start: bool = True
    other_questions: int = 0

    def __post_init__(self) -> None:
        c = type(self)
        check_int(c, "generate", self.generate, minimum=0)
        check_int(c, "other_questions", self.other_questions, minimum=0)
        check_int(c, "prefixes", self.prefixes, minimum=0)
        check_int(c, "prefix_tokens", self.prefix_tokens)
        check_number(c, "temperature", self.temperature)
        check_int(c, "seed", self.seed, minimum=0)
        check_bool(c, "warm_start", self.warm_start)


# ---------------------------------------------------------------- backend configs


@dataclass(frozen=True)
class BackendConfig(Config):
    """Base class of method-specific settings. ``single_layer`` methods edit exactly one layer;
    ``uses_values = False`` methods (FT) train on the answer directly, with no value search or chunking;
    ``value_at_edited_layer`` methods (UnKE) need the value layer to be the edited layer."""

    method: ClassVar[str] = ""
    single_layer: ClassVar[bool] = False
    uses_values: ClassVar[bool] = True
    value_at_edited_layer: ClassVar[bool] = False


@dataclass(frozen=True)
class ClosedFormConfig(BackendConfig):
    """Settings shared by the closed-form updates (MEMIT, AlphaEdit, ROME): the dtype of the linear solve."""

    solve_dtype: Literal["float32", "float64"] = "float64"

    def __post_init__(self) -> None:
        check_choice(type(self), "solve_dtype", self.solve_dtype, ("float32", "float64"))


@dataclass(frozen=True)
class MultiLayerConfig(ClosedFormConfig):
    """Settings shared by MEMIT and AlphaEdit, which spread the change over several layers.

    ``kp_weight`` weights the same-text term (the other keys of the edit texts are kept: AnyEdit's K_p, 0 = off);
    ``preserve_weight`` > 0 also keeps the keys of generic chat conversations (``EditConfig.preserve``).
    ``spread``: MEMIT's ``"even"`` split asks layer i (of n) for ``1/(n - i)`` of the remaining change;
    ``"greedy"`` asks every layer for all of it (later layers then correct what earlier ones could not realise).
    ``history_weight`` weights the keys of the edits applied before (``EditHistory``, sequential editing).
    """

    kp_weight: float = 1.0
    preserve_weight: float = 0.0
    spread: Literal["even", "greedy"] = "even"
    history_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        c = type(self)
        check_number(c, "kp_weight", self.kp_weight, allow_zero=True)
        check_number(c, "preserve_weight", self.preserve_weight, allow_zero=True)
        check_choice(c, "spread", self.spread, ("even", "greedy"))
        check_number(c, "history_weight", self.history_weight, allow_zero=True)


# ---------------------------------------------------------------- the method registry


@dataclass(frozen=True)
class Method:
    """A registered editing method: its update backend class and its config class."""

    name: str
    backend: type
    config: type[BackendConfig]


_METHODS: dict[str, Method] = {}


def register_method(name: str, backend_cls: type, config_cls: type[BackendConfig]) -> None:
    """Register a method under ``name`` (unique) with its backend and config classes."""
    if name in _METHODS:
        raise ConfigError(f"a method named {name!r} is already registered")
    if not (isinstance(config_cls, type) and issubclass(config_cls, BackendConfig)):
        raise ConfigError(f"the config class of method {name!r} must subclass BackendConfig")
    _METHODS[name] = Method(name, backend_cls, config_cls)


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is one ConfigError listing the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(known_methods())}") from None


def backend_config_class(name: str) -> type[BackendConfig]:
    return get_method(name).config


def known_methods() -> list[str]:
    return sorted(_METHODS)


def check_layers(method: str, layers: Any, value_layer: int | None = None, n_layers: int | None = None) -> None:
    """The one check of edited layers and the value layer (raises ConfigError naming the field):

    ``layers`` a non-empty, strictly increasing list of layer indices (exactly one for single-layer methods),
    each below ``n_layers`` when the model's depth is known; the value layer ``value_layer`` (when given) one
    the edited layers can move: at or above the last of them, and equal to the edited layer for methods that
    train one layer towards the values at that layer (UnKE)."""
    cls = backend_config_class(method)
    if not isinstance(layers, (tuple, list)) or not layers:
        fail(EditConfig, "layers", layers, "must be a non-empty list of layer indices")
    for v in layers:
        check_int(EditConfig, "layers", v, minimum=0)
    if list(layers) != sorted(set(layers)):
        fail(EditConfig, "layers", layers, "must be strictly increasing")
    if cls.single_layer and len(layers) != 1:
        fail(EditConfig, "layers", layers, f"method {method!r} edits exactly one layer")
    if n_layers is not None and max(layers) >= n_layers:
        raise ConfigError(f"EditConfig.layers={list(layers)}: the model has {n_layers} layers (0..{n_layers - 1})")
    if value_layer is None or not cls.uses_values:
        return
    if n_layers is not None and value_layer >= n_layers:
        raise ConfigError(f"ValueConfig.layer={value_layer}: the model has {n_layers} layers (0..{n_layers - 1})")
    if cls.value_at_edited_layer and (len(layers) != 1 or value_layer != layers[0]):
        raise ConfigError(f"ValueConfig.layer={value_layer}: method {method!r} trains one layer towards the values at "
                          f"that layer; set value.layer to the edited layer (layers={list(layers)}) or leave it unset")
    if value_layer < max(layers):
        raise ConfigError(f"ValueConfig.layer={value_layer} is below the edited layer {max(layers)}: the update at "
                          f"layers={list(layers)} cannot move the hidden state at layer {value_layer}; use a value "
                          f"layer >= {max(layers)} or leave it unset (the last edited layer)")


# ---------------------------------------------------------------- the edit config


@dataclass(frozen=True)
class EditConfig(Config):
    """Everything that determines an edit (besides the model and the requests).

    ``layers``: decoder layers whose weights change (None: the architecture's default, scaled to depth).
    ``rounds``: 1 is the paper's single pass. With more, the vectors are searched again on the model with
    the update so far and the backend adds a correction, until every chunk is reproduced or the rounds
    run out (an update that realises only part of each vector gets closer each round).
    ``phrasings``: other wordings of the question edited with it (paraphrase generalisation; off by default).
    ``backend``: the method's own settings; ``None`` means the method's defaults.
    ``batch``: dotted-path settings (as :meth:`with_overrides` takes) that apply when one call edits more than one
    request (``compute_edits`` with several requests, ``anyedit edit --requests``, consolidating a stack): what one
    update writing many answers needs differs from what one answer needs (presets measure both). A setting given
    explicitly with :meth:`with_overrides` (``--set``) is dropped from it, so it wins over the batch's.
    ``repair``: in an edit of more than one request, how many repair passes follow the update (0: none). A pass
    asks every request's question on the model with the edit so far applied (teacher-forced: is every answer token
    the argmax?) and edits each request whose answer is not reproduced again, one at a time, on top of it, as an
    edit stack adds a member: with the single-request settings, keeping the batch's other answers and the repairs
    before it as history. The result is one edit (the summed weight changes). No effect on one request.
    """

    method: str = "memit"
    layers: tuple[int, ...] | None = None
    rounds: int = 1
    repair: int = 0
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    preserve: PreserveConfig = field(default_factory=PreserveConfig)
    phrasings: PhrasingConfig = field(default_factory=PhrasingConfig)
    backend: BackendConfig | None = None
    batch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = type(self)
        cls = backend_config_class(self.method)
        if self.backend is None:
            object.__setattr__(self, "backend", cls())
        elif not isinstance(self.backend, cls):
            fail(c, "backend", self.backend, f"method {self.method!r} needs a {cls.__name__}")
        check_int(c, "rounds", self.rounds)
        check_int(c, "repair", self.repair, minimum=0)
        for name, typ in (("chunking", ChunkingConfig), ("value", ValueConfig), ("stats", StatsConfig),
                          ("prompt", PromptConfig), ("preserve", PreserveConfig), ("phrasings", PhrasingConfig)):
            if not isinstance(getattr(self, name), typ):
                fail(c, name, getattr(self, name), f"must be a {typ.__name__}")
        if self.layers is not None:
            if isinstance(self.layers, list):
                object.__setattr__(self, "layers", tuple(self.layers))
            check_layers(self.method, self.layers, self.value.layer)
        if not cls.uses_values and self.chunking.mode != "none":
            fail(c, "chunking", self.chunking.mode, f"method {self.method!r} trains on the whole answer and does "
                  "not use chunking; set chunking.mode='none' (--chunking none)")
        if self.phrasings.other_questions and self.chunking.mode == "none":
            fail(c, "phrasings.other_questions", self.phrasings.other_questions, "edits the answer's chunks after "
                 "the first, and chunking.mode='none' makes one chunk (the whole answer)")
        self._check_batch()

    def _check_batch(self) -> None:
        c = type(self)
        if not isinstance(self.batch, dict) or not all(isinstance(k, str) for k in self.batch):
            fail(c, "batch", self.batch, "must be an object of dotted config fields, e.g. {\"backend.steps\": 300}")
        object.__setattr__(self, "batch", dict(self.batch))
        bad = sorted(k for k in self.batch if k in ("method", "batch") or k.startswith("batch."))
        if bad:
            fail(c, "batch", self.batch, f"cannot set {', '.join(bad)}")
        if self.batch:
            try:
                self.for_batch()
            except ConfigError as e:
                raise ConfigError(f"EditConfig.batch: {e}") from None

    def for_batch(self) -> "EditConfig":
        """The config for an edit of more than one request: ``batch`` applied (and emptied)."""
        return self.with_overrides(self.batch) if self.batch else self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "EditConfig":
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"EditConfig: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        method = data.get("method", "memit")
        backend = data.pop("backend", None)
        base = super().from_dict.__func__(cls, data)  # type: ignore[attr-defined]
        bcls = backend_config_class(method)
        return dataclasses.replace(base, backend=bcls.from_dict(backend))

    def with_overrides(self, overrides: dict[str, Any]) -> "EditConfig":
        """Return a copy with dotted-path overrides, e.g. ``{"chunking.window": 20, "backend.kp_weight": 0}``.

        Changing ``method`` resets ``backend`` to the new method's defaults before the other overrides.
        """
        d = self.to_dict()
        if "method" in overrides and overrides["method"] != self.method:
            d["method"] = overrides["method"]
            d["backend"] = {}
            d["batch"] = {}  # the batch settings were the old method's
            if not backend_config_class(d["method"]).uses_values:
                d["chunking"] = {**d["chunking"], "mode": "none"}
        for key, value in overrides.items():
            if key == "method":
                continue
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown config field {key!r}")
                node = node[p]
            if parts[0] == "backend" and len(parts) == 2:
                bfields = {f.name for f in dataclasses.fields(backend_config_class(d["method"]))}
                if parts[1] not in bfields:
                    raise ConfigError(f"unknown config field {key!r} for method {d['method']!r}")
            elif parts[-1] not in node:
                raise ConfigError(f"unknown config field {key!r}")
            node[parts[-1]] = list(value) if isinstance(value, tuple) else value
        if isinstance(d.get("batch"), dict):  # a field given explicitly wins over the batch's, in any order
            d["batch"] = {k: v for k, v in d["batch"].items() if k not in overrides}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                return EditConfig.from_dict(d)
            except UserWarning as w:
                raise ConfigError(str(w)) from None
