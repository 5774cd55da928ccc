"""Edit stacks: sequential edits that persist, in one directory, applied in order.

``DIR/stack.json`` lists the members in order, each with the SHA-256 of its manifest; each member is a saved
:class:`~anyedit.editing.result.EditResult` in ``DIR/<nnnn>/`` with its share of the history (keys, texts). A new
edit is computed on the model with every earlier member applied, and with their history, so the update method
protects them (AlphaEdit's key history, MEMIT's history covariance, UnKE's kept texts). Each member records the
SHA-256 of the weights it was computed on, which are the weights the members before it leave: applying a stack to
another model, or in another order, fails on the first member that does not fit, and nothing stays applied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .. import _io
from ..config import EditConfig
from ..errors import ConfigError, EditApplyError, EditFormatError, FingerprintMismatchError
from ..model.arch import model_identity
from ..types import EditRequest
from .history import EditHistory
from .result import MANIFEST, EditResult, _sha256, identity_differences

log = logging.getLogger(__name__)

STACK = "stack.json"
STACK_FORMAT = 1
CONSOLIDATE_MIN_STEPS = 300  # update steps a round when consolidating (measured: README, "many edits")


def is_stack(path: str | Path) -> bool:
    """Whether ``path`` is an edit stack directory (it holds ``stack.json``)."""
    return (Path(path) / STACK).is_file()


def _file_sha256(path: Path) -> str:
    return _sha256(path.read_bytes())


class EditStack:
    """An ordered list of edits saved in ``directory``. ``EditStack(DIR)`` opens it (an empty stack when ``DIR``
    does not exist yet; it is created by the first :meth:`push`)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise EditFormatError(f"{self.directory} is a file, not an edit stack directory")
        if self.directory.is_dir() and any(self.directory.iterdir()) and not is_stack(self.directory):
            raise EditFormatError(f"{self.directory} is not an edit stack (no {STACK}) and is not empty")
        self._index = self._read_index()
        self._loaded: list[EditResult] | None = None
        self._applied: dict[int, list[EditResult]] = {}

    # ------------------------------------------------------------ index

    def _read_index(self) -> dict[str, Any]:
        path = self.directory / STACK
        if not path.is_file():
            return {"format_version": STACK_FORMAT, "base_model": None, "members": []}
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EditFormatError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(index, dict) or index.get("format_version") != STACK_FORMAT \
                or not isinstance(index.get("members"), list):
            raise EditFormatError(f"{path}: not an anyedit stack index (expected format_version {STACK_FORMAT} "
                                  "and a list of members)")
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        """Write ``stack.json`` (atomically): from here on, ``index`` is the stack."""
        _io.write_text(self.directory / STACK, json.dumps(index, indent=2))
        self._index = index

    def _check_not_applied(self, doing: str) -> None:
        if self._applied:
            raise EditApplyError(f"edit stack {self.directory} is applied to a model; revert it before {doing}")

    def __len__(self) -> int:
        return len(self._index["members"])

    @property
    def base_model(self) -> dict[str, Any] | None:
        return self._index.get("base_model")

    def entries(self) -> list[dict[str, Any]]:
        """One dict per member, in order: its directory, method, questions and when it was added."""
        return [dict(m) for m in self._index["members"]]

    def since_consolidation(self) -> int:
        """How many members were added after the last consolidated one (all of them when there is none)."""
        members = self._index["members"]
        last = max((i for i, m in enumerate(members) if "consolidates" in m), default=-1)
        return len(members) - last - 1

    def consolidation_due(self, every: int) -> bool:
        """Whether ``every`` > 0 members were added since the last consolidation (and there is more than one)."""
        return every > 0 and len(self) > 1 and self.since_consolidation() >= every

    # ------------------------------------------------------------ members

    def members(self) -> list[EditResult]:
        """Every member, loaded and checked against the index (a missing, corrupt or swapped member is one
        :class:`EditFormatError` naming it)."""
        if self._loaded is None:
            out = []
            for i, m in enumerate(self._index["members"], 1):
                d = self.directory / m["dir"]
                if not (d / MANIFEST).is_file():
                    raise EditFormatError(f"edit stack {self.directory}: member {i} ({d}) is missing")
                if _file_sha256(d / MANIFEST) != m["manifest_sha256"]:
                    raise EditFormatError(f"edit stack {self.directory}: member {i} ({d}) is not the edit the "
                                          "stack recorded (its manifest's SHA-256 differs)")
                try:
                    res = EditResult.load(d)
                except EditFormatError as e:
                    raise EditFormatError(f"edit stack {self.directory}: member {i} is unusable: {e}") from None
                out.append(res)
            self._loaded = out
        return self._loaded

    def history(self) -> EditHistory:
        """What every member leaves for the next edit to protect (their keys, texts and targets, and their weight
        changes)."""
        h = EditHistory()
        for res in self.members():
            if res.history is not None:
                h.merge(res.history)
            h.add_applied(res.deltas)
        return h

    @property
    def config(self) -> EditConfig | None:
        """The config of the last member (its prompt format is the one to ask the edited model with)."""
        members = self.members()
        return members[-1].config if members else None

    # ------------------------------------------------------------ apply / revert

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model the stack was not made on (identity; the weights are checked member by member)."""
        if self.base_model is None:
            return
        diff = identity_differences(self.base_model, model_identity(model))
        if diff:
            raise FingerprintMismatchError(
                f"edit stack {self.directory} was made on {self.base_model.get('name_or_path')!r}; "
                f"this model differs in {', '.join(diff)}")

    def apply(self, model: nn.Module) -> nn.Module:
        """Apply every member in order (all or nothing; each is checked against the weights it was made on)."""
        if id(model) in self._applied:
            raise EditApplyError(f"edit stack {self.directory} is already applied to this model; revert it first")
        members = self.members()
        self.check_model(model)
        done: list[EditResult] = []
        try:
            for i, res in enumerate(members, 1):
                try:
                    res.apply(model, verify=True)
                except FingerprintMismatchError as e:
                    raise FingerprintMismatchError(f"edit stack {self.directory}, member {i}: {e}") from None
                done.append(res)
        except BaseException:
            for res in reversed(done):
                res.revert(model)
            raise
        self._applied[id(model)] = done
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        """Restore the weights the stack was applied to, bit for bit."""
        done = self._applied.pop(id(model), None)
        if done is None:
            raise EditApplyError(f"edit stack {self.directory} is not applied to this model")
        for res in reversed(done):
            res.revert(model)
        return model

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with stack.applied(model): ...`` applies every member for the block and always reverts them."""
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    # ------------------------------------------------------------ changing the stack

    def edit(self, model: nn.Module, tokenizer: Any, requests: EditRequest | dict | Sequence[EditRequest | dict],
             config: EditConfig | None = None, *, consolidate_every: int = 0, **kwargs: Any) -> EditResult:
        """Compute one edit on ``model`` with every member applied and their history, and :meth:`push` it. The
        model is left as it was (call :meth:`apply` to use the stack).

        ``consolidate_every`` = K > 0: once K members have been added since the last consolidation (or since the
        start), the stack is consolidated (:meth:`consolidate`) right after this push, with
        :meth:`consolidation_config` and the other keyword arguments. Returns this edit's result; the stack's last
        entry then has ``"consolidates"``. Edits made one after another on one layer wear each other away after
        about 10 long answers, and consolidating every 10 kept all of 20 (README, "Consolidating a stack")."""
        from .compute import compute_edits

        if isinstance(consolidate_every, bool) or not isinstance(consolidate_every, int) or consolidate_every < 0:
            raise ConfigError(f"consolidate_every must be an integer >= 0, got {consolidate_every!r}")
        if kwargs.get("history") is not None:
            raise EditApplyError("a stack supplies its own history; do not pass one")
        kwargs.pop("history", None)
        with self.applied(model):
            result = compute_edits(model, tokenizer, requests, config, history=self.history(), **kwargs)
        self.push(result)
        if self.consolidation_due(consolidate_every):
            self.consolidate(model, tokenizer, **kwargs)
        return result

    def _save_member(self, result: EditResult, name: str) -> tuple[Path, dict[str, Any]]:
        """Save ``result`` as ``DIR/name`` (whole or not at all) and return it with its index entry; it counts as a
        member only once the caller writes the index."""
        final = self.directory / name
        if final.exists():  # left by a push or consolidation that stopped before the index was written
            shutil.rmtree(final)
        tmp = _io.fresh_dir(self.directory, f".{name}.", ".partial")
        try:
            result.save(tmp)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        member = {"dir": name, "manifest_sha256": _file_sha256(final / MANIFEST), "method": result.config.method,
                  "questions": [r.question for r in result.requests],
                  "edit_s": round(float(result.timings.get("total_s", 0.0)), 1)}
        return final, member

    def push(self, result: EditResult) -> Path:
        """Save ``result`` as the next member. It must have been computed on the base model with every member
        applied (``compute_edits(..., history=stack.history())`` inside ``with stack.applied(model)``, or
        :meth:`edit`); that is checked whenever the stack is applied."""
        if self.base_model is not None:
            if identity_differences(self.base_model, result.base_model):
                raise FingerprintMismatchError(f"this edit was made on another model than edit stack {self.directory}")
        n = len(self) + 1
        name = f"{n:04d}"
        final, member = self._save_member(result, name)
        index = {**self._index, "base_model": self.base_model or result.base_model,
                 "members": [*self._index["members"], member]}
        self._write_index(index)
        if self._loaded is not None:
            self._loaded.append(EditResult.load(final))
        log.info("edit stack %s: added member %d (%s)", self.directory, n, name)
        return final

    def consolidation_config(self) -> EditConfig:
        """The last member's config, with ``backend.steps`` raised to at least :data:`CONSOLIDATE_MIN_STEPS` for
        methods that train: one update then has to write every member's answer (a batch of 30 long answers came
        back 11/30 with 100 steps a round and 30/30 with 300). Its ``batch`` settings apply too, as to any edit of
        more than one request."""
        config = self.config
        if config is None:
            raise EditFormatError(f"edit stack {self.directory} is empty: nothing to consolidate")
        steps = getattr(config.backend, "steps", None)
        if steps is not None and steps < CONSOLIDATE_MIN_STEPS:
            config = config.with_overrides({"backend.steps": CONSOLIDATE_MIN_STEPS})
        return config

    def consolidate(self, model: nn.Module, tokenizer: Any, config: EditConfig | None = None,
                    **kwargs: Any) -> EditResult:
        """Replace every member with one edit of all their requests together, computed on the base model.

        Edits made one after another wear each other away: each update moves the layer again, and by 20 long
        answers on one layer the earlier ones fall (README, "50 sequential edits"). One update that writes all the
        answers at once does not compound that way. ``model`` must be the base model (the stack not
        applied; checked against the first member). A question asked in more than one member keeps its latest
        answer (placed where the later one was). ``config``: by default :meth:`consolidation_config`. The new
        member replaces the old ones only once it is saved; the stack is left as it was if anything fails
        before."""
        from .compute import compute_edits

        self._check_not_applied("consolidating")
        members = self.members()
        if not members:
            raise EditFormatError(f"edit stack {self.directory} is empty: nothing to consolidate")
        self.check_model(model)
        try:
            members[0].check_model(model)
        except FingerprintMismatchError as e:
            raise FingerprintMismatchError(f"edit stack {self.directory}: consolidate needs the base model, without "
                                           f"the stack or another edit applied ({e})") from None
        latest: dict[str, EditRequest] = {}
        for res in members:
            for r in res.requests:
                latest.pop(r.question, None)  # a later answer to the same question replaces it, at its own place
                latest[r.question] = r
        config = config if config is not None else self.consolidation_config()
        result = compute_edits(model, tokenizer, list(latest.values()), config, **kwargs)
        old = list(self._index["members"])
        name = f"c{len(old):04d}-{_sha256(json.dumps(old, sort_keys=True).encode())[:8]}"
        final, member = self._save_member(result, name)
        member["consolidates"] = len(old)
        index = {**self._index, "members": [member]}
        self._write_index(index)  # the old members stop counting here
        for m in old:
            if m["dir"] != name:
                shutil.rmtree(self.directory / m["dir"], ignore_errors=True)
        self._loaded = [EditResult.load(final)]
        log.info("edit stack %s: %d members consolidated into one edit of %d requests (%s)", self.directory,
                 len(old), len(result.requests), name)
        return result

    def pop(self) -> dict[str, Any]:
        """Remove the last member (the stack must not be applied to a model); returns its entry."""
        if not self._index["members"]:
            raise EditFormatError(f"edit stack {self.directory} is empty: nothing to pop")
        self._check_not_applied("popping")
        last = self._index["members"][-1]
        index = {**self._index, "members": self._index["members"][:-1]}
        self._write_index(index)  # the member stops counting here
        shutil.rmtree(self.directory / last["dir"], ignore_errors=True)
        if self._loaded is not None:
            self._loaded = self._loaded[:-1]
        return last
