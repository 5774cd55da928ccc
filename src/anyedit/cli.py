"""Command line: ``anyedit edit | ask | apply | stats | demo | presets | eval | report | sweep``.

The only module that parses argv, reads the environment, configures logging and picks devices. Bad input
prints one line ``anyedit: error: ...`` to stderr and exits with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
log = logging.getLogger("anyedit.cli")


class CliError(Exception):
    """A user error detected by the CLI itself."""


# ------------------------------------------------------------------ argument parsing helpers


def _parse_layers(text: str) -> list[int]:
    bad = argparse.ArgumentTypeError(f"--layers {text!r}: use a range like 4-8 or a list like 4,6,8")
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            layers = list(range(int(lo), int(hi) + 1))
        else:
            layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise bad from None
    if not layers or min(layers) < 0:
        raise bad
    return layers


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"chunking": {"window": 30}}`` -> ``{"chunking.window": 30}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_chunking(text: str) -> dict[str, Any]:
    parts = text.split(":")
    mode = parts[0]
    try:
        if mode == "none" and len(parts) == 1:  # the paper's single-token baseline (--set may move the anchor)
            return {"chunking.mode": "none", "chunking.first_anchor": "prompt_end"}
        if mode == "window" and len(parts) in (2, 3):
            out: dict[str, Any] = {"chunking.mode": "window", "chunking.window": int(parts[1])}
            if len(parts) == 3:
                out["chunking.overlap"] = int(parts[2])
            return out
        if mode == "sentence" and len(parts) == 2:
            return {"chunking.mode": "sentence", "chunking.window": int(parts[1])}
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--chunking {text!r}: use window:N, window:N:OVERLAP, sentence:N or none")


def _parse_set(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}: use KEY=VALUE, e.g. backend.mom2_weight=500")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _read_requests(args: argparse.Namespace) -> list[Any]:
    from .types import EditRequest

    if args.requests:
        path = Path(args.requests)
        if not path.is_file():
            raise CliError(f"--requests: file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                rows = json.loads(text)
                rows = rows if isinstance(rows, list) else [rows]
        except json.JSONDecodeError as e:
            raise CliError(f"--requests: {path} is not valid JSON ({e})") from None
        if not rows:
            raise CliError(f"--requests: {path} holds no requests")
        return [EditRequest.from_dict(r) for r in rows]
    if not args.question:
        raise CliError("give --question with --answer/--answer-file, or --requests FILE")
    if args.answer_file:
        path = Path(args.answer_file)
        if not path.is_file():
            raise CliError(f"--answer-file: file not found: {path}")
        answer = path.read_text(encoding="utf-8").rstrip("\n")
    elif args.answer is not None:
        answer = args.answer
    else:
        raise CliError("give the new answer with --answer TEXT or --answer-file PATH")
    return [EditRequest(question=args.question, answer=answer, subject=args.subject,
                        phrasings=tuple(args.phrasing or ()))]


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "huggingface_hub", "urllib3", "gensim", "smart_open", "absl"):  # absl: rouge-score
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
        os.environ.setdefault("TQDM_DISABLE", "1")


def _load(args: argparse.Namespace):
    from .models import load_model

    t = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device, cache_dir=args.cache_dir)
    log.info("loaded %s in %.1f s", args.model or "the default model (SmolLM2-135M-Instruct)", time.perf_counter() - t)
    return model, tok


def _fit_snap(cfg: Any, over: dict[str, Any]) -> dict[str, Any]:
    """When the window or overlap is overridden but ``chunking.snap`` is not, keep the preset's snap only as
    far as the new chunking allows it (at most ``(window - 1) // 2``, 0 with an overlap)."""
    if "chunking.snap" in over or not ({"chunking.window", "chunking.overlap"} & set(over)):
        return over
    window = int(over.get("chunking.window", cfg.chunking.window))
    overlap = int(over.get("chunking.overlap", cfg.chunking.overlap))
    snap = 0 if overlap else min(cfg.chunking.snap, max(window - 1, 0) // 2)
    if snap != cfg.chunking.snap:
        log.info("chunking.snap %d -> %d to fit window %d, overlap %d", cfg.chunking.snap, snap, window, overlap)
    return {**over, "chunking.snap": snap}


def _build_config(args: argparse.Namespace, model: Any):
    from .presets import preset_config, preset_name

    cfg = preset_config(model, args.method)
    over: dict[str, Any] = {}
    if args.config:  # fields over the preset, each checked like a --set (a full config from `presets` works too)
        path = Path(args.config)
        if not path.is_file():
            raise CliError(f"--config: file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CliError(f"--config: {path} is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise CliError(f"--config: {path} must hold a JSON object of config fields, not a {type(data).__name__}")
        over.update(_flatten(data))
    if args.layers:
        over["layers"] = args.layers
    if args.chunking:
        over.update(args.chunking)
    if args.corpus:
        over["stats.corpus"] = args.corpus
    over.update(dict(args.set or []))
    over = _fit_snap(cfg, over)
    cfg = cfg.with_overrides(over) if over else cfg
    log.info("method %s, preset %s, layers %s, chunking %s", cfg.method, preset_name(model, args.method),
             list(cfg.layers or []), cfg.chunking.to_dict())
    return cfg


def _check_not_a_file(path: str | None, flag: str) -> None:
    if path and Path(path).exists() and not Path(path).is_dir():
        raise CliError(f"{flag} {path} is a file; give a directory")


def _check_out_dir(path: str | None, flag: str, overwrite: bool) -> None:
    _check_not_a_file(path, flag)
    if path and Path(path).exists() and any(Path(path).iterdir()) and not overwrite:
        raise CliError(f"{flag} {path} exists and is not empty; choose a new directory or pass --overwrite")


def _validate_methods(args: argparse.Namespace) -> None:
    from .config import known_methods

    if getattr(args, "method", None) and args.method not in known_methods():
        raise CliError(f"unknown method {args.method!r}; known methods: {', '.join(known_methods())}")


def _score(reference: str, text: str) -> str:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return ""
    f = rouge_scorer.RougeScorer(["rougeL"]).score(reference, text)["rougeL"].fmeasure
    return f"ROUGE-L F1 vs. the new answer: {f:.2f}"


# ------------------------------------------------------------------ commands


def cmd_edit(args: argparse.Namespace, requests: list[Any] | None = None) -> int:
    from .editing import compute_edits
    from .generation import generate
    from .prompts import prepare_request

    _validate_methods(args)
    requests = requests if requests is not None else _read_requests(args)
    _check_out_dir(args.save, "--save", args.overwrite)
    _check_out_dir(args.save_model, "--save-model", args.overwrite)
    model, tok = _load(args)
    cfg = _build_config(args, model)
    prepared = [prepare_request(tok, r, cfg.prompt) for r in requests]  # validates before the long work
    questions = [r.question for r in requests]
    lengths = [len(p.target_ids) + 16 for p in prepared]
    before = [] if args.no_compare else [generate(model, tok, q, cfg.prompt, max_new_tokens=n)[0]
                                         for q, n in zip(questions, lengths)]
    probe = None
    if not args.no_locality:
        from .locality import LocalityProbe

        probe = LocalityProbe(model, tok, cfg.prompt)
    result = compute_edits(model, tok, requests, cfg, cache_dir=args.cache_dir, show_progress=not args.quiet)
    result.apply(model, verify=False)
    after = [generate(model, tok, q, cfg.prompt, max_new_tokens=n)[0] for q, n in zip(questions, lengths)]
    for i, r in enumerate(requests):
        print(f"Question: {r.question}")
        if before:
            print("--- before the edit ---")
            print(before[i])
        print("--- after the edit ---")
        print(after[i])
        score = _score(r.answer, after[i])
        if score:
            print(f"({score})")
        print()
    t = result.timings
    realised = result.diagnostics.get("realised_fraction")
    n_chunks = sum(len(x) for x in result.reports)
    summary = (f"edited {len(requests)} request(s), {n_chunks} chunks, with {cfg.method}: value search "
               f"{t.get('value_search_s', 0):.1f} s, statistics {t.get('statistics_s', 0):.1f} s, "
               f"update {t.get('update_s', 0):.1f} s")
    rounds = len(result.diagnostics.get("rounds", []))
    if realised is not None:  # the first round's: later rounds each target what is still missing
        summary += f"; the first update realised {100 * realised:.0f}% of the target change"
    if rounds > 1:
        summary += f", {rounds} refinement rounds in all"
    print(summary)
    if probe is not None:
        rep = probe.compare(model)
        result.diagnostics["locality"] = rep.to_dict()
        print(rep.summary())
    if args.save:
        result.save(args.save)
        print(f"saved the edit to {args.save} (apply it with: anyedit ask --edit {args.save} --question ...)")
    if args.save_model:
        model.save_pretrained(args.save_model)
        tok.save_pretrained(args.save_model)
        print(f"saved the edited model to {args.save_model}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .types import EditRequest

    demo = json.loads(resources.files("anyedit").joinpath("data/demo.json").read_text(encoding="utf-8"))
    args.model = args.model  # default model unless given
    return cmd_edit(args, [EditRequest.from_dict(demo)])


def _load_edit_dir(path: str):
    from .result import load_edits

    return load_edits(path)


def cmd_ask(args: argparse.Namespace) -> int:
    from .config import PromptConfig
    from .generation import generate

    edit = _load_edit_dir(args.edit) if args.edit else None  # validate before loading the model
    model, tok = _load(args)
    prompt = edit.config.prompt if edit else PromptConfig()
    if edit:
        edit.apply(model, verify=True)
    print(generate(model, tok, args.question, prompt, max_new_tokens=args.max_new_tokens)[0])
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    edit = _load_edit_dir(args.edit)
    _check_out_dir(args.out, "--out", args.overwrite)
    model, tok = _load(args)
    edit.apply(model, verify=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"wrote the edited model to {args.out}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .editing import prepare_statistics
    from .stats import CovarianceCache
    from .models import default_cache_dir

    _validate_methods(args)
    model, tok = _load(args)
    cfg = _build_config(args, model)
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
    from .presets import preset_config, preset_name

    _validate_methods(args)
    model, _ = _load(args)
    cfg = preset_config(model, args.method)
    print(f"preset: {preset_name(model, args.method)}")
    print(cfg.to_json())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import EvalSettings, evaluate
    from .loaders import load_dataset
    from .report import report

    _validate_methods(args)
    _check_not_a_file(args.out, "--out")
    dataset = load_dataset(args.dataset, args.format, args.limit, _ids(args))  # validates before loading the model
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} invalid record(s): " + "; ".join(dataset.skipped[:5]),
              file=sys.stderr)
    model, tok = _load(args)
    cfg = _build_config(args, model)
    decoding: dict[str, Any] = {}
    if args.reference_decoding:  # the reference code's lengths and near-greedy sampling
        decoding = dict(sample_temperature=0.001, max_new_tokens=512, sub_max_new_tokens=512)
    given = dict(sample_temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                 sub_max_new_tokens=args.sub_max_new_tokens)
    decoding.update({k: v for k, v in given.items() if v is not None})
    settings = EvalSettings(n_probes=args.probes, compat=not args.no_compat, embed=not args.no_similarity,
                            seed=args.seed, **decoding)
    out = evaluate(model, tok, dataset, cfg, args.out, settings=settings, label=args.label,
                   cache_dir=args.cache_dir, show_progress=not args.quiet)
    print(report([out]))
    return 0


def _ids(args: argparse.Namespace) -> list[str] | None:
    return [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None


def cmd_sweep(args: argparse.Namespace) -> int:
    import itertools

    from .evaluation import EvalSettings, evaluate
    from .loaders import load_dataset
    from .report import pareto, plots, report

    _validate_methods(args)
    _check_not_a_file(args.out, "--out")
    grid: list[tuple[str, list[Any]]] = []
    for item in args.grid:
        if "=" not in item:
            raise CliError(f"--grid {item!r}: use KEY=V1,V2,... e.g. chunking.window=10,20,40")
        key, values = item.split("=", 1)
        grid.append((key.strip(), [_parse_set(f"x={v}")[1] for v in values.split(",")]))
    dataset = load_dataset(args.dataset, args.format, args.limit, _ids(args))
    model, tok = _load(args)
    base = _build_config(args, model)
    combos = list(itertools.product(*[v for _, v in grid]))
    configs = []
    for combo in combos:  # validate every setting before the long work starts
        over = {k: v for (k, _), v in zip(grid, combo)}
        configs.append((",".join(f"{k}={v}" for k, v in over.items()), base.with_overrides(_fit_snap(base, over))))
    settings = EvalSettings(n_probes=args.probes, compat=False, embed=False)
    dirs = []
    for name, cfg in configs:
        out = Path(args.out) / name.replace("/", "_")
        log.info("sweep: %s", name)
        dirs.append(evaluate(model, tok, dataset, cfg, out, settings=settings, label=name or cfg.method,
                             cache_dir=args.cache_dir, show_progress=not args.quiet))
    print(report(dirs))
    print()
    print(pareto(dirs))
    for path in plots(dirs, Path(args.out) / "plots"):
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import pareto, plots, report

    paired = not args.all_rows
    print(report(args.runs, paired))
    if len(args.runs) > 1:
        print()
        print(pareto(args.runs, paired))
    if not args.no_plots:
        for path in plots(args.runs, args.plots or Path(args.runs[0]) / "plots", paired):
            print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="anyedit", description="Edit long-form knowledge inside a language model "
                                "(AnyEdit chunked editing). Default model: SmolLM2-135M-Instruct, embedded.")
    p.add_argument("--version", action="version", version=f"anyedit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="HF model id, local directory or .gguf file (default: the embedded "
                        "SmolLM2-135M-Instruct)")
        sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weight dtype (default float32)")
        sp.add_argument("--device", help="torch device, e.g. cpu, cuda:0, mps (default: where the model loads)")
        sp.add_argument("--cache-dir", help="where converted models and statistics are cached "
                        "(default $ANYEDIT_CACHE or ~/.cache/anyedit)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
        sp.add_argument("-v", "--verbose", action="store_true", help="debug logging (per-chunk losses)")

    def method_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--method", help="update backend (default: the preset's; `anyedit presets` shows it)")
        sp.add_argument("--chunking", type=_parse_chunking, help="window:N[:OVERLAP], sentence:N or none "
                        "(none = single-token baseline: the whole answer from one vector at the last prompt token)")
        sp.add_argument("--layers", type=_parse_layers, help="edited layers, e.g. 4-8 or 4,6,8")
        sp.add_argument("--corpus", help="statistics corpus: wikipedia-offline, model-samples, a .txt/.jsonl "
                        "file, or hf:DATASET")
        sp.add_argument("--config", help="JSON file with config values (as saved in edit.json)")
        sp.add_argument("--set", action="append", type=_parse_set, metavar="KEY=VALUE",
                        help="override any config value, e.g. --set backend.mom2_weight=500 (repeatable)")

    e = sub.add_parser("edit", help="edit the model: new answer for a question; print before/after; save the edit",
                       description="Edit the model so that, asked QUESTION, it answers the new answer. Prints the "
                       "model's answer before and after, and saves the edit with --save.")
    common(e)
    method_opts(e)
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
    e.add_argument("--save", help="directory for the edit (deltas.safetensors + edit.json)")
    e.add_argument("--save-model", help="also write the whole edited model here (save_pretrained)")
    e.add_argument("--no-compare", action="store_true", help="skip generating the answer before the edit")
    e.add_argument("--no-locality", action="store_true", help="skip the locality check on the built-in probe "
                   "prompts (40 unrelated questions answered before and after)")
    e.add_argument("--overwrite", action="store_true", help="allow writing into non-empty directories")
    e.set_defaults(func=cmd_edit)

    d = sub.add_parser("demo", help="the main job: a long-form edit of the default model, before/after",
                       description="Edit the default model with a built-in long news-style answer and show its "
                       "answer before and after.")
    common(d)
    method_opts(d)
    d.add_argument("--save", help="directory for the edit")
    d.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --save directory")
    d.set_defaults(func=cmd_demo, save_model=None, no_compare=False, no_locality=False)

    a = sub.add_parser("ask", help="answer a question (greedy), optionally with a saved edit applied",
                       description="Print the model's greedy answer (only the answer, on stdout).")
    common(a)
    a.add_argument("--question", required=True)
    a.add_argument("--edit", help="a directory written by `anyedit edit --save`")
    a.add_argument("--max-new-tokens", type=int, default=256)
    a.set_defaults(func=cmd_ask)

    ap = sub.add_parser("apply", help="write a full model with a saved edit applied",
                        description="Load the base model, apply a saved edit (refused if it belongs to another "
                        "model) and write the edited model with save_pretrained.")
    common(ap)
    ap.add_argument("--edit", required=True, help="a directory written by `anyedit edit --save`")
    ap.add_argument("--out", required=True, help="output directory for the edited model")
    ap.add_argument("--overwrite", action="store_true")
    ap.set_defaults(func=cmd_apply)

    s = sub.add_parser("stats", help="precompute and cache covariance statistics (progress bar with ETA)",
                       description="Compute once and cache every statistic an edit with these settings loads: the MLP "
                       "key statistics of the edited layers and, where the method preserves chat conversations "
                       "(preserve_weight > 0), those conversations' statistics (AlphaEdit: the null-space basis).")
    common(s)
    method_opts(s)
    s.set_defaults(func=cmd_stats)

    ev = sub.add_parser("eval", help="evaluate a method on a benchmark file (resumable JSONL rows + table)",
                        description="For each record: answer before, edit, answer the question / paraphrases / "
                        "sub-questions, score, revert (checked bitwise). Rows stream to OUT/rows.jsonl; rerunning "
                        "the same command resumes after the last finished record.")
    common(ev)
    method_opts(ev)
    ev.add_argument("--dataset", required=True, help="benchmark file (JSON list or JSONL)")
    ev.add_argument("--format", default="auto", help="unkebench, mquake, counterfact, wikiupdate, editeverything, "
                    "plain, or auto (default: detected from the fields)")
    ev.add_argument("--limit", type=int, help="only the first N valid records")
    ev.add_argument("--ids", help="only the records with these IDs (comma-separated: id, case_id or index)")
    ev.add_argument("--out", required=True, help="run directory (run.json + rows.jsonl)")
    ev.add_argument("--label", help="name of this run in reports (default: method, + when chunked)")
    ev.add_argument("--probes", type=int, default=10, help="unrelated probe prompts for locality (0 = off)")
    ev.add_argument("--temperature", type=float, help="sample at this temperature (the reference used 0.001) "
                    "instead of greedy decoding")
    ev.add_argument("--max-new-tokens", type=int, help="for the question and paraphrases (default: answer length "
                    "+ 32)")
    ev.add_argument("--sub-max-new-tokens", type=int, help="for each sub-question (default 64)")
    ev.add_argument("--reference-decoding", action="store_true", help="decode as the reference code does: sampling "
                    "at temperature 0.001, 512 new tokens for every prompt (the model's own generation defaults "
                    "are still not applied); the options above override it")
    ev.add_argument("--no-compat", action="store_true", help="skip the reference-compatible metrics")
    ev.add_argument("--no-similarity", action="store_true", help="skip the MiniLM similarity")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_eval)

    sw = sub.add_parser("sweep", help="evaluate a grid of settings; tables, Pareto front and plots",
                        description="Run `anyedit eval` for every combination of --grid values (resumable, one "
                        "directory each under --out), then print the tables and the efficacy/locality Pareto front "
                        "and write the plots to OUT/plots.")
    common(sw)
    method_opts(sw)
    sw.add_argument("--dataset", required=True)
    sw.add_argument("--format", default="auto")
    sw.add_argument("--limit", type=int)
    sw.add_argument("--ids", help="only the records with these IDs (comma-separated)")
    sw.add_argument("--out", required=True)
    sw.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                    help="config field and values, e.g. --grid chunking.window=10,20,40 (repeatable)")
    sw.add_argument("--probes", type=int, default=10)
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="tables (and plots) from one or more eval runs, side by side",
                        description="Print the paper-style tables of eval runs and write the plots: score vs. "
                        "answer length, per-category bars, the efficacy/locality front and (for runs differing only "
                        "in chunk size) the chunk-size sweep.")
    rp.add_argument("runs", nargs="+", help="run directories written by `anyedit eval --out`, or directories holding "
                    "them (an `anyedit sweep --out` directory)")
    rp.add_argument("--plots", help="directory for the PNG plots (default: RUN/plots, RUN the first directory given)")
    rp.add_argument("--no-plots", action="store_true", help="print the tables only")
    rp.add_argument("--all-rows", action="store_true", help="use every row of each run; by default runs over the "
                    "same dataset are compared on the records all of them have")
    rp.add_argument("-q", "--quiet", action="store_true")
    rp.add_argument("-v", "--verbose", action="store_true")
    rp.set_defaults(func=cmd_report)

    pr = sub.add_parser("presets", help="show the configuration anyedit picks for a model",
                        description="Print the preset config for the model (and --method).")
    common(pr)
    pr.add_argument("--method")
    pr.set_defaults(func=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    from .errors import AnyEditError

    try:
        return int(args.func(args) or 0)
    except (AnyEditError, CliError) as e:
        print(f"anyedit: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("anyedit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
