"""The editing commands: ``edit``, ``demo``, ``ask``, ``apply``, ``stack``, ``stats``, ``presets``."""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from typing import Any

from .options import (
    CliError,
    build_config,
    check_method,
    check_out_dir,
    load,
    method_options,
    model_options,
    parse_set,
    probe_option,
    read_requests,
)


def cmd_edit(args: argparse.Namespace, requests: list[Any] | None = None) -> int:
    from ..editing.compute import compute_edits
    from ..eval.locality import FactualProbe, LocalityProbe
    from ..eval.scoring import ANSWER_SLACK, reproduction
    from ..model.generation import generate
    from ..model.prompts import prepare_request
    from ..stats.preserve import builtin_prompts

    check_method(args)
    requests = requests if requests is not None else read_requests(args)
    check_out_dir(args.out, "--out", args.overwrite)
    check_out_dir(args.out_model, "--out-model", args.overwrite)
    stack = _open_stack(args)
    model, tok = load(args)
    cfg = build_config(args, model)
    prepared = [prepare_request(tok, r, cfg.prompt) for r in requests]  # validates before the long work
    questions = [r.question for r in requests]
    lengths = [len(p.target_ids) + ANSWER_SLACK for p in prepared]
    # locality is always against the unedited model, also when a stack of earlier edits is applied
    probe = LocalityProbe(model, tok, cfg.prompt, builtin_prompts("probe")[: args.probes]) if args.probes > 0 else None
    facts = None if args.no_facts else FactualProbe(model, tok, cfg.prompt)
    if stack is not None:
        stack.apply(model)
    before = [] if args.no_compare else [generate(model, tok, q, cfg.prompt, max_new_tokens=n)[0]
                                         for q, n in zip(questions, lengths)]
    result = compute_edits(model, tok, requests, cfg, cache_dir=args.cache_dir, show_progress=not args.quiet,
                           history=stack.history() if stack is not None else None)
    result.apply(model, verify=False)
    after = reproduction(model, tok, requests, cfg.prompt)
    for i, r in enumerate(requests):
        print(f"Question: {r.question}")
        if before:
            print("--- before the edit ---")
            print(before[i])
        print("--- after the edit ---")
        print(after[i][0])
        print(f"(ROUGE-L F1 vs. the new answer: {after[i][1]:.2f})")
        print()
    print(summary(result, len(requests)))
    if probe is not None:
        rep = probe.compare(model)
        result.diagnostics["locality"] = rep.to_dict()
        print(rep.summary())
    if facts is not None:
        fact_rep = facts.compare(model)
        result.diagnostics["facts"] = fact_rep.to_dict()
        print(fact_rep.summary())
    if stack is not None:
        where = stack.push(result)
        print(f"added the edit to the stack {stack.directory} as member {len(stack)} ({where.name}); "
              f"ask with all {len(stack)}: anyedit ask --edit {stack.directory} --question ...")
        if stack.consolidation_due(getattr(args, "consolidate_every", 0)):
            _consolidate_after_edit(stack, result, model, tok, args)
    if args.out:
        result.save(args.out)
        print(f"saved the edit to {args.out} (apply it with: anyedit ask --edit {args.out} --question ...)")
    if args.out_model:
        model.save_pretrained(args.out_model)
        tok.save_pretrained(args.out_model)
        print(f"saved the edited model to {args.out_model}")
    return 0


def _consolidate_after_edit(stack: Any, result: Any, model: Any, tok: Any, args: argparse.Namespace) -> None:
    """``edit --stack DIR --consolidate-every K``: the stack (this edit on top) is replaced by one edit of all its
    requests, computed on the base model; every question of the stack is then asked again and scored. The model is
    left with the consolidated stack applied (for ``--out-model``)."""
    from ..eval.scoring import REPRODUCED, reproduction

    result.revert(model)
    stack.revert(model)
    n = len(stack)
    merged = stack.consolidate(model, tok, cache_dir=args.cache_dir, show_progress=not args.quiet)
    stack.apply(model)
    scores = [f for _, f in reproduction(model, tok, merged.requests, merged.config.prompt)]
    print(f"consolidated the stack's {n} members into one edit of {len(merged.requests)} request(s) in "
          f"{merged.timings.get('total_s', 0.0):.0f} s: {sum(x >= REPRODUCED for x in scores)} of them come back "
          f"(ROUGE-L F1 >= {REPRODUCED}; lowest {min(scores):.2f})")


def _open_stack(args: argparse.Namespace) -> Any:
    """The ``--stack`` of an edit, opened and every member checked before the model loads (None without it)."""
    from ..editing.stack import EditStack

    if getattr(args, "consolidate_every", 0) and not getattr(args, "stack", None):
        raise CliError("--consolidate-every needs --stack DIR")
    if getattr(args, "consolidate_every", 0) < 0:
        raise CliError(f"--consolidate-every must be >= 0, got {args.consolidate_every}")
    if not getattr(args, "stack", None):
        return None
    stack = EditStack(args.stack)
    stack.members()
    return stack


def _load_edit(path: str) -> Any:
    """A saved edit or an edit stack (checked before the model loads)."""
    from ..editing.result import EditResult
    from ..editing.stack import EditStack, is_stack

    if is_stack(path):
        stack = EditStack(path)
        stack.members()
        return stack
    return EditResult.load(path)


def summary(result: Any, n_requests: int) -> str:
    """One line: what was edited, with which method, where the time went, how much the first update realised."""
    t = result.timings
    realised = result.diagnostics.get("realised_fraction")
    n_chunks = sum(len(x) for x in result.reports)
    line = (f"edited {n_requests} request(s), {n_chunks} chunks, with {result.config.method}: value search "
            f"{t.get('value_search_s', 0):.1f} s, statistics {t.get('statistics_s', 0):.1f} s, "
            f"update {t.get('update_s', 0):.1f} s")
    rounds = len(result.diagnostics.get("rounds", []))
    if realised is not None:  # the first round's: later rounds each target what is still missing
        line += f"; the first update realised {100 * realised:.0f}% of the target change"
    if rounds > 1:
        line += f", {rounds} refinement rounds in all"
    repaired = [e["request"] + 1 for p in result.diagnostics.get("repair", []) for e in p["edits"]]
    if repaired:  # EditConfig.repair: requests the batch update left short, edited again on top
        line += f"; request(s) {', '.join(map(str, repaired))} not reproduced by the batch update, edited again"
    return line


def cmd_demo(args: argparse.Namespace) -> int:
    from ..types import EditRequest

    demo = json.loads(resources.files("anyedit").joinpath("data/demo.json").read_text(encoding="utf-8"))
    return cmd_edit(args, [EditRequest.from_dict(demo)])


def cmd_ask(args: argparse.Namespace) -> int:
    from ..config import PromptConfig
    from ..model.generation import generate

    edit = _load_edit(args.edit) if args.edit else None  # validate before loading the model
    model, tok = load(args)
    prompt = edit.config.prompt if edit is not None and edit.config is not None else PromptConfig()
    if edit is not None:
        edit.apply(model)
    print(generate(model, tok, args.question, prompt, max_new_tokens=args.max_new_tokens)[0])
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    edit = _load_edit(args.edit)
    check_out_dir(args.out, "--out", args.overwrite)
    model, tok = load(args)
    edit.apply(model)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"wrote the edited model to {args.out}")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from ..editing.stack import EditStack, is_stack
    from ..errors import EditFormatError

    if not is_stack(args.dir):
        raise EditFormatError(f"{args.dir} is not an edit stack (no stack.json)")
    stack = EditStack(args.dir)
    if args.action == "pop":
        last = stack.pop()
        print(f"removed member {len(stack) + 1} ({last['dir']}: {'; '.join(last['questions'])}); "
              f"{len(stack)} left")
        return 0
    if args.action == "consolidate":
        return _consolidate(stack, args)
    stack.members()  # list checks every member, so a broken stack shows here
    base = (stack.base_model or {}).get("name_or_path", "?")
    print(f"edit stack {stack.directory}: {len(stack)} edit(s) on {base}, applied in this order:")
    for i, m in enumerate(stack.entries(), 1):
        print(f"{i:4d}  {m['dir']}  {m['method']:9s}  {m.get('edit_s', 0):7.1f} s  {' | '.join(m['questions'])}")
    return 0


def _consolidate(stack: Any, args: argparse.Namespace) -> int:
    """``anyedit stack consolidate DIR``: every member replaced by one edit of all their requests together."""
    stack.members()  # every member checked before the model loads
    if len(stack) < 2:
        raise CliError(f"edit stack {stack.directory} has {len(stack)} edit(s): nothing to consolidate")
    cfg = stack.consolidation_config()
    if args.set:
        cfg = cfg.with_overrides(dict(args.set))
    model, tok = load(args)
    n = len(stack)
    result = stack.consolidate(model, tok, cfg, cache_dir=args.cache_dir, show_progress=not args.quiet)
    print(f"consolidated {n} edits of {stack.directory} into one edit of {len(result.requests)} request(s) in "
          f"{result.timings.get('total_s', 0.0):.0f} s; ask with it: anyedit ask --edit {stack.directory} "
          "--question ...")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..editing.compute import prepare_statistics
    from ..model.loading import default_cache_dir
    from ..stats.covariance import CovarianceCache

    check_method(args)
    model, tok = load(args)
    cfg = build_config(args, model)
    cache = CovarianceCache(args.cache_dir or default_cache_dir(), show_progress=not args.quiet)
    t = time.perf_counter()
    loaded = prepare_statistics(model, tok, cfg, stats_cache=cache, show_progress=not args.quiet)
    if not loaded:
        print(f"{cfg.method} loads no statistics; nothing to compute")
        return 0
    print(f"{cfg.method} statistics ready in {time.perf_counter() - t:.1f} s under {cache.cache_dir}:")
    for what in loaded:
        print(f"  {what}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ..editing.presets import named_presets, preset_config, preset_name

    check_method(args)
    model, _ = load(args)
    cfg = preset_config(model, args.method, args.preset)
    print(f"preset: {preset_name(model, args.method, args.preset)}")
    print(cfg.to_json())
    if cfg.batch:
        print("for an edit of more than one request (--requests, consolidating a stack): "
              + ", ".join(f"{k}={v}" for k, v in cfg.batch.items()) + " (a --set of the same field wins)")
    others = [n for n in named_presets(model, args.method) if n != args.preset]
    if others:
        print(f"other presets for this model (--preset NAME): {', '.join(others)}")
    return 0


def _edit_output(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="DIR", help="save the edit here (deltas.safetensors + edit.json)")
    sp.add_argument("--overwrite", action="store_true", help="allow writing into non-empty directories")


def add_commands(sub: Any) -> None:
    e = sub.add_parser("edit", help="edit the model: new answer for a question; print before/after; save the edit",
                       description="Edit the model so that, asked QUESTION, it answers the new answer. Prints the "
                       "model's answer before and after, and saves the edit with --out.")
    model_options(e)
    method_options(e)
    e.add_argument("--question", help="the question (prompt)")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--answer", help="the new answer text")
    g.add_argument("--answer-file", help="read the new answer from this file")
    e.add_argument("--subject", help="the entity the fact is about (must occur in the question); used by "
                   "--set chunking.first_anchor=subject_last (the original MEMIT/ROME position)")
    e.add_argument("--phrasing", action="append", metavar="QUESTION", help="another wording of the question to "
                   "edit with it (repeatable); --set phrasings.generate=N asks the model for N more")
    e.add_argument("--requests", help="JSON list or JSONL file of {question, answer[, id, subject, phrasings]} to "
                   "edit together")
    _edit_output(e)
    e.add_argument("--stack", metavar="DIR", help="add this edit to the edit stack in DIR (created when missing): it "
                   "is computed on the model with every earlier edit of the stack applied, protecting them")
    e.add_argument("--consolidate-every", type=int, default=0, metavar="K", help="with --stack: once K edits have "
                   "been added since the last consolidation, replace the stack's members with one edit of all their "
                   "requests, computed on the base model (as `anyedit stack consolidate`; takes as long as a batch "
                   "edit of them all). Measured: 20 long answers all kept with K=10, 15 of 20 without")
    e.add_argument("--out-model", metavar="DIR", help="also write the whole edited model here (save_pretrained)")
    e.add_argument("--no-compare", action="store_true", help="skip generating the answer before the edit")
    probe_option(e, 40)
    e.set_defaults(func=cmd_edit)

    d = sub.add_parser("demo", help="the main job: a long-form edit of the default model, before/after",
                       description="Edit the default model with a built-in long news-style answer and show its "
                       "answer before and after, and locality on the built-in probe prompts.")
    model_options(d)
    method_options(d)
    _edit_output(d)
    probe_option(d, 40)
    d.set_defaults(func=cmd_demo, out_model=None, no_compare=False, stack=None)

    a = sub.add_parser("ask", help="answer a question (greedy), optionally with a saved edit applied",
                       description="Print the model's greedy answer (only the answer, on stdout).")
    model_options(a)
    a.add_argument("--question", required=True, help="the question to answer")
    a.add_argument("--edit", metavar="DIR", help="a directory written by `anyedit edit --out`, or an edit stack "
                   "(`anyedit edit --stack`): every edit in it is applied in order")
    a.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    a.set_defaults(func=cmd_ask)

    ap = sub.add_parser("apply", help="write a full model with a saved edit applied",
                        description="Load the base model, apply a saved edit (refused if it belongs to another "
                        "model) and write the edited model with save_pretrained.")
    model_options(ap)
    ap.add_argument("--edit", required=True, metavar="DIR", help="a directory written by `anyedit edit --out`, or "
                    "an edit stack (`anyedit edit --stack`)")
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory for the edited model")
    ap.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out directory")
    ap.set_defaults(func=cmd_apply)

    s = sub.add_parser("stats", help="precompute and cache every statistic an edit loads (progress bar with ETA)",
                       description="Compute once and cache every statistic an edit with these settings loads: the MLP "
                       "key statistics of the edited layers and, where the method preserves chat conversations "
                       "(preserve_weight > 0), those conversations' statistics (AlphaEdit: the null-space basis).")
    model_options(s)
    method_options(s)
    s.set_defaults(func=cmd_stats)

    pr = sub.add_parser("presets", help="show the configuration anyedit picks for a model",
                        description="Print the preset config for the model (and --method).")
    model_options(pr)
    pr.add_argument("--method", help="the method whose preset to show (default: the model's default method)")
    pr.add_argument("--preset", metavar="NAME", help="show this preset (one of the others listed) instead")
    pr.set_defaults(func=cmd_presets)

    st = sub.add_parser("stack", help="show an edit stack, remove its last edit, or merge its edits into one",
                        description="`anyedit stack list DIR` lists the edits of a stack in the order they are "
                        "applied (and checks every member); `anyedit stack pop DIR` removes the last one; "
                        "`anyedit stack consolidate DIR` replaces them all with one edit of all their questions "
                        "together, computed on the base model (edits made one after another wear each other "
                        "away; one update that writes them all does not compound that way). It uses the last "
                        "edit's settings with at least 300 update steps a round; --set changes them.")
    st.add_argument("action", choices=["list", "pop", "consolidate"])
    st.add_argument("dir", metavar="DIR", help="the stack directory (`anyedit edit --stack DIR`)")
    model_options(st)
    st.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE",
                    help="consolidate: override a config value of the last edit's settings (repeatable)")
    st.set_defaults(func=cmd_stack)
