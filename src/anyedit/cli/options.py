"""What every command shares: argument groups (written once), the parsing of option values, loading the model,
building the config from preset + options, checks of output paths, and logging setup."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._io import read_records
from ..config import get_method
from ..errors import AnyEditError
from ..eval.datasets import FORMATS
from ..eval.runner import EvalSettings

log = logging.getLogger("anyedit.cli")


class CliError(AnyEditError, ValueError):
    """A user error detected by the CLI itself."""


# ------------------------------------------------------------------ option values


def parse_layers(text: str) -> list[int]:
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


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"chunking": {"window": 30}}`` -> ``{"chunking.window": 30}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_chunking(text: str) -> dict[str, Any]:
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


def parse_value(text: str) -> Any:
    """A JSON value (number, true/false, list, ...), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}: use KEY=VALUE, e.g. backend.mom2_weight=500")
    key, value = text.split("=", 1)
    return key.strip(), parse_value(value)


def parse_grid(text: str) -> tuple[str, list[Any]]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--grid {text!r}: use KEY=V1,V2,... e.g. chunking.window=10,20,40")
    key, values = text.split("=", 1)
    return key.strip(), [parse_value(v) for v in values.split(",")]


def parse_ids(text: str) -> list[str]:
    return [i.strip() for i in text.split(",") if i.strip()]


# ------------------------------------------------------------------ argument groups


def model_options(sp: argparse.ArgumentParser) -> None:
    """The model to load, where caches live, and how much to print."""
    sp.add_argument("--model", help="HF model id, local directory or .gguf file (default: the embedded "
                    "SmolLM2-135M-Instruct)")
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="weight dtype (default float32)")
    sp.add_argument("--device", help="torch device, e.g. cpu, cuda:0, mps (default: where the model loads)")
    sp.add_argument("--cache-dir", help="where converted models and statistics are cached "
                    "(default $ANYEDIT_CACHE or ~/.cache/anyedit)")
    output_options(sp)


def output_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
    sp.add_argument("-v", "--verbose", action="store_true", help="debug logging (per-chunk losses)")


def method_options(sp: argparse.ArgumentParser) -> None:
    """Which method, and any config field over its preset."""
    sp.add_argument("--method", help="update backend (default: the preset's; `anyedit presets` shows it)")
    sp.add_argument("--preset", metavar="NAME", help="start from this preset instead of the model's default, e.g. "
                    "small-chat-unke-paraphrase (`anyedit presets` lists the ones that fit the model)")
    sp.add_argument("--chunking", type=parse_chunking, help="window:N[:OVERLAP], sentence:N or none "
                    "(none = single-token baseline: the whole answer from one vector at the last prompt token)")
    sp.add_argument("--layers", type=parse_layers, help="edited layers, e.g. 4-8 or 4,6,8")
    sp.add_argument("--corpus", help="statistics corpus: wikipedia-offline, model-samples, a .txt/.jsonl "
                    "file, or hf:DATASET")
    sp.add_argument("--config", help="JSON file with config values (as saved in edit.json)")
    sp.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE",
                    help="override any config value, e.g. --set backend.mom2_weight=500 (repeatable)")


def probe_option(sp: argparse.ArgumentParser, default: int) -> None:
    sp.add_argument("--probes", type=int, default=default, metavar="N",
                    help=f"measure locality on the first N built-in probe prompts (unrelated questions answered "
                    f"before and after the edit; 40 in all; default {default}; 0 = off)")
    sp.add_argument("--no-facts", action="store_true", help="skip the factual probes (62 short questions with one "
                    "right answer, asked before and after the edit: how many the model still answers right)")


def dataset_options(sp: argparse.ArgumentParser) -> None:
    """The benchmark records to evaluate on, and the run directory."""
    sp.add_argument("--dataset", required=True, help="benchmark file (JSON list or JSONL)")
    sp.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                    help="the file's format (default auto: detected from the fields)")
    sp.add_argument("--limit", type=int, help="only the first N valid records")
    sp.add_argument("--ids", type=parse_ids, help="only the records with these IDs (comma-separated: id, case_id "
                    "or index)")


def eval_options(sp: argparse.ArgumentParser) -> None:
    """How each record is answered and scored (the fields of :class:`EvalSettings`)."""
    probe_option(sp, 10)
    sp.add_argument("--temperature", type=float, help="sample at this temperature (the reference used 0.001) "
                    "instead of greedy decoding")
    sp.add_argument("--max-new-tokens", type=int, help="for the question and paraphrases (default: answer length "
                    "+ 32)")
    sp.add_argument("--sub-max-new-tokens", type=int, help="for each sub-question (default 64)")
    sp.add_argument("--reference-decoding", action="store_true", help="decode as the reference code does: sampling "
                    "at temperature 0.001, 512 new tokens for every prompt (the model's own generation defaults "
                    "are still not applied); the options above override it")
    sp.add_argument("--no-compat", action="store_true", help="skip the reference-compatible metrics")
    sp.add_argument("--no-similarity", action="store_true", help="skip the MiniLM similarity")
    sp.add_argument("--seed", type=int, default=0, help="seed of sampled answers (per record)")


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """The :class:`EvalSettings` of :func:`eval_options`."""
    decoding: dict[str, Any] = {}
    if args.reference_decoding:  # the reference code's lengths and near-greedy sampling
        decoding = dict(sample_temperature=0.001, max_new_tokens=512, sub_max_new_tokens=512)
    given = dict(sample_temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                 sub_max_new_tokens=args.sub_max_new_tokens)
    decoding.update({k: v for k, v in given.items() if v is not None})
    return EvalSettings(n_probes=args.probes, facts=not args.no_facts, compat=not args.no_compat,
                        embed=not args.no_similarity, seed=args.seed, **decoding)


# ------------------------------------------------------------------ model, config, files


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "huggingface_hub", "urllib3", "gensim", "smart_open", "absl"):  # absl: rouge-score
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
        os.environ.setdefault("TQDM_DISABLE", "1")


def check_method(args: argparse.Namespace) -> None:
    """An unknown ``--method`` fails before the model is loaded."""
    if getattr(args, "method", None):
        get_method(args.method)


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..model.loading import load_model

    t = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device, cache_dir=args.cache_dir)
    log.info("loaded %s in %.1f s", args.model or "the default model (SmolLM2-135M-Instruct)", time.perf_counter() - t)
    return model, tok


def fit_snap(cfg: Any, over: dict[str, Any]) -> dict[str, Any]:
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


def build_config(args: argparse.Namespace, model: Any) -> Any:
    """The preset for this model and ``--method``, with ``--config``, ``--layers``, ``--chunking``, ``--corpus``
    and ``--set`` over it (each field checked)."""
    from ..editing.presets import preset_config, preset_name

    preset = getattr(args, "preset", None)
    cfg = preset_config(model, args.method, preset)
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
        over.update(flatten(data))
    if args.layers:
        over["layers"] = args.layers
    if args.chunking:
        over.update(args.chunking)
    if args.corpus:
        over["stats.corpus"] = args.corpus
    over.update(dict(args.set or []))
    over = fit_snap(cfg, over)
    cfg = cfg.with_overrides(over) if over else cfg
    log.info("method %s, preset %s, layers %s, chunking %s", cfg.method, preset_name(model, args.method, preset),
             list(cfg.layers or []), cfg.chunking.to_dict())
    return cfg


def read_requests(args: argparse.Namespace) -> list[Any]:
    """The edit requests of ``--requests FILE``, or of ``--question`` with ``--answer`` / ``--answer-file``."""
    from ..types import EditRequest

    if args.requests:
        return [EditRequest.from_dict(r) for r in read_records(args.requests, "--requests file", CliError)]
    if not args.question:
        raise CliError("give --question with --answer/--answer-file, or --requests FILE")
    if args.answer_file:
        path = Path(args.answer_file)
        if not path.is_file():
            raise CliError(f"--answer-file not found: {path}")
        answer = path.read_text(encoding="utf-8").rstrip("\n")
    elif args.answer is not None:
        answer = args.answer
    else:
        raise CliError("give the new answer with --answer TEXT or --answer-file PATH")
    return [EditRequest(question=args.question, answer=answer, subject=args.subject,
                        phrasings=tuple(args.phrasing or ()))]


def check_not_a_file(path: str | None, flag: str) -> None:
    if path and Path(path).exists() and not Path(path).is_dir():
        raise CliError(f"{flag} {path} is a file; give a directory")


def check_out_dir(path: str | None, flag: str, overwrite: bool) -> None:
    check_not_a_file(path, flag)
    if path and Path(path).exists() and any(Path(path).iterdir()) and not overwrite:
        raise CliError(f"{flag} {path} exists and is not empty; choose a new directory or pass --overwrite")
