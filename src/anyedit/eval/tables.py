"""Tables and plots from evaluation runs (``rows.jsonl`` + ``run.json`` directories).

``report(dirs)`` returns markdown: the question's table (one line per run; several runs side by side), the
paraphrase and sub-question table (the paper's "Para." and "Sub" groups), per-category scores for
EditEverything-style data, the reference-compatible metrics, and the records a run skipped. A directory without
``run.json`` stands for the runs in its subdirectories (e.g. an ``anyedit sweep --out`` directory).
``pareto(dirs)`` tables the efficacy / paraphrase / locality front. The plots are in :mod:`anyedit.eval.plots`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RequestError


@dataclass
class Run:
    path: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"id", "skipped": why}: records not edited

    @property
    def label(self) -> str:
        return str(self.manifest.get("label") or self.path.name)

    @property
    def dataset(self) -> str:
        return Path(self.manifest["dataset"]["path"]).stem


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "run.json").is_file():
        raise RequestError(f"{path}: not an evaluation run (no run.json); run `anyedit eval --out {path}` first")
    rows, skipped = [], []
    rows_file = path / "rows.jsonl"
    if rows_file.is_file():
        for line in rows_file.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            (skipped if "skipped" in row else rows).append(row)
    return Run(path, json.loads((path / "run.json").read_text()), rows, skipped)


def expand_runs(dirs: list[str | Path]) -> list[Path]:
    """``dirs`` with each directory that is not a run itself replaced by its subdirectories that are
    (sorted); an error names a directory that is neither."""
    out: list[Path] = []
    for d in map(Path, dirs):
        if (d / "run.json").is_file():
            out.append(d)
            continue
        subs = sorted(x for x in d.iterdir() if (x / "run.json").is_file()) if d.is_dir() else []
        if not subs:
            raise RequestError(f"{d}: not an evaluation run (no run.json, nor runs in its subdirectories); "
                               f"run `anyedit eval --out {d}` first")
        out.extend(subs)
    return out


def load_runs(dirs: list[str | Path], paired: bool = True) -> tuple[list[Run], list[str]]:
    """Load runs; with ``paired``, runs over the same dataset file that cover different records (a run still
    going, or ``--limit``/``--ids`` differences) are cut to the records all of them have, so that every mean
    compares the same records. Returns the runs and one note per dataset that was cut."""
    runs = [load_run(d) for d in expand_runs(dirs)]
    notes: list[str] = []
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.rows:  # a run without rows yet is shown empty, not allowed to empty the others
            groups.setdefault(str(run.manifest["dataset"].get("path")), []).append(run)
    for group in groups.values():
        if not paired or len(group) < 2 or any("id" not in r for run in group for r in run.rows):
            continue
        common = set.intersection(*({str(r["id"]) for r in run.rows} for run in group))
        if all(len(run.rows) == len(common) for run in group):
            continue
        for run in group:
            run.rows = [r for r in run.rows if str(r["id"]) in common]
        notes.append(f"{group[0].dataset}: {', '.join(run.label for run in group)} cover different records; "
                     f"tables and plots use the {len(common)} that all of them have (--all-rows: every row)")
    return runs, notes


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.mean(vals) if vals else None


def get(row: dict[str, Any], *keys: str) -> float | None:
    node: Any = row
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node if isinstance(node, (int, float)) else None


COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("BLEU", ("scores", "question", "bleu")),
    ("R-1 F1", ("scores", "question", "rouge1_f")),
    ("R-2 F1", ("scores", "question", "rouge2_f")),
    ("R-L F1", ("scores", "question", "rougeL_f")),
    ("R-L rec", ("scores", "question", "rougeL_r")),
    ("MiniLM sim", ("scores", "question", "similarity")),
    ("tok acc", ("scores", "token_accuracy")),
    ("before R-L F1", ("scores", "before", "rougeL_f")),
    ("loc tok kept", ("locality", "token_agreement")),
    ("loc identical", ("locality", "exact")),
    ("loc answer R-L", ("locality", "answer_rougeL_f")),
    ("loc dNLL", ("locality", "nll_change")),
    ("facts kept", ("facts", "kept_fraction")),
    ("facts all kept", ("facts", "all_kept")),
    ("entropy", ("scores", "question", "entropy")),
    ("edit s", ("timings", "total_s")),
]
PARA_SUB: list[tuple[str, tuple[str, ...]]] = [  # the paper's "Para." and "Sub" groups
    ("para BLEU", ("scores", "paraphrase", "bleu")),
    ("para R-1 F1", ("scores", "paraphrase", "rouge1_f")),
    ("para R-2 F1", ("scores", "paraphrase", "rouge2_f")),
    ("para R-L F1", ("scores", "paraphrase", "rougeL_f")),
    ("para R-L rec", ("scores", "paraphrase", "rougeL_r")),
    ("para MiniLM sim", ("scores", "paraphrase", "similarity")),
    ("para R-L F1 before", ("scores", "paraphrase_before", "rougeL_f")),
    ("sub R-1 rec", ("scores", "sub", "rouge1_r")),
    ("sub R-L rec", ("scores", "sub", "rougeL_r")),
    ("sub R-L F1", ("scores", "sub", "rougeL_f")),
    ("sub R-1 rec before", ("scores", "sub_before", "rouge1_r")),
    ("sub R-L rec before", ("scores", "sub_before", "rougeL_r")),
]
CATEGORY: list[tuple[str, tuple[str, ...]]] = [
    ("R-L F1", ("scores", "question", "rougeL_f")),
    ("BLEU", ("scores", "question", "bleu")),
    ("MiniLM sim", ("scores", "question", "similarity")),
    ("R-L rec (ref)", ("scores", "question", "compat_rougeL_r")),
]
COMPAT: list[tuple[str, tuple[str, ...]]] = [
    ("char BLEU", ("scores", "question", "compat_bleu")),
    ("R-1 rec (ref)", ("scores", "question", "compat_rouge1_r")),
    ("R-2 rec (ref)", ("scores", "question", "compat_rouge2_r")),
    ("R-L rec (ref)", ("scores", "question", "compat_rougeL_r")),
    ("MiniLM 256 (ref)", ("scores", "question", "compat_similarity")),
    ("para R-L rec (ref)", ("scores", "paraphrase", "compat_rougeL_r")),
    ("sub R-L rec (ref)", ("scores", "sub", "compat_rougeL_r")),
]


def _fmt(v: float | None, key: tuple[str, ...]) -> str:
    if v is None:
        return "-"
    if key[-1] == "total_s":
        return f"{v:.0f}"
    if key[-1] == "nll_change":
        return f"{v:+.3f}"
    if key[-1] == "token_agreement":  # close to 1: the third decimal tells runs apart
        return f"{v:.3f}"
    return f"{v:.2f}" if key[-1] != "entropy" else f"{v:.2f}"


def _cell(rows: list[dict[str, Any]], key: tuple[str, ...]) -> str:
    """The mean over ``rows``; when only some rows have the value (rows written by an older version), the mean
    over those, marked with how many: ``0.42 (12/20)``."""
    vals = [get(r, *key) for r in rows]
    have = sum(v is not None for v in vals)
    text = _fmt(mean(vals), key)
    return text if have in (0, len(rows)) else f"{text} ({have}/{len(rows)})"


def table(runs: list[Run], columns: list[tuple[str, tuple[str, ...]]]) -> str:
    head = "| run | data | n | " + " | ".join(c for c, _ in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for run in runs:
        cells = [_cell(run.rows, key) for _, key in columns]
        n = f"{len(run.rows)}" + (f" (+{len(run.skipped)} skipped)" if run.skipped else "")
        lines.append(f"| {run.label} | {run.dataset} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_table(runs: list[Run]) -> str | None:
    """One line per run and metric, one column per category (with its record count)."""
    cats = sorted({r.get("category") for run in runs for r in run.rows if r.get("category")})
    if not cats:
        return None
    lines = ["| run | data | metric | " + " | ".join(cats) + " |", "|" + "---|" * (3 + len(cats))]
    for run in runs:
        by_cat = {c: [r for r in run.rows if r.get("category") == c] for c in cats}
        if not any(by_cat.values()):
            continue
        for name, key in CATEGORY:
            if all(get(r, *key) is None for r in run.rows):
                continue
            cells = [f"{_cell(by_cat[c], key)} (n={len(by_cat[c])})" if by_cat[c] else "-" for c in cats]
            lines.append(f"| {run.label} | {run.dataset} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(dirs: list[str | Path], paired: bool = True) -> str:
    runs, notes = load_runs(dirs, paired)
    parts = [*notes, *([""] if notes else [])]
    parts += ["Mean over records (ROUGE: rouge-score F1/recall; BLEU: sacrebleu word level; sim: MiniLM cosine "
              "over the whole text; loc: built-in probe prompts before vs. after)", "", table(runs, COLUMNS)]
    if any(get(r, *key) is not None for run in runs for r in run.rows for _, key in PARA_SUB):
        parts += ["", "Paraphrased question (the paper's Para.) and sub-questions (Sub; 'before': the unedited "
                  "model's answers)", "", table(runs, PARA_SUB)]
    cat = category_table(runs)
    if cat:
        parts += ["", "The question's answer per category", "", cat]
    if any(get(r, *key) is not None for run in runs for r in run.rows for _, key in COMPAT):
        parts += ["", "The reference code's metric definitions (char-level BLEU, rouge==1.0.1 recall over unique "
                  "n-grams, MiniLM truncated at 256), for comparison with the paper", "", table(runs, COMPAT)]
    for run in runs:
        if run.skipped:
            parts += ["", f"{run.label} ({run.dataset}) skipped {len(run.skipped)} record(s) it could not edit: "
                      + "; ".join(f"{r['id']}: {r['skipped']}" for r in run.skipped)]
    return "\n".join(parts)


def front(runs: list[Run]) -> list[tuple[Run, float, float, float | None, bool]]:
    """``(run, efficacy, locality, paraphrase, on_front)`` for the runs that have efficacy and locality means.

    Objectives (all higher is better): ROUGE-L F1 on the question, probe tokens kept, and the paraphrase
    ROUGE-L F1 when every run has paraphrases. A run is on the front when no other run is at least as good on
    every objective and better on one."""
    pts = []
    for run in runs:
        eff = mean([get(r, "scores", "question", "rougeL_f") for r in run.rows])
        loc = mean([get(r, "locality", "token_agreement") for r in run.rows])
        para = mean([get(r, "scores", "paraphrase", "rougeL_f") for r in run.rows])
        if eff is not None and loc is not None:
            pts.append((run, eff, loc, para))
    use_para = all(p is not None for *_, p in pts)
    objs = [(eff, loc, *((para,) if use_para else ())) for _, eff, loc, para in pts]

    def dominated(o: tuple) -> bool:
        return any(all(a >= b for a, b in zip(x, o)) and any(a > b for a, b in zip(x, o)) for x in objs)

    return [(run, eff, loc, para, not dominated(o)) for (run, eff, loc, para), o in zip(pts, objs)]


def pareto(dirs: list[str | Path], paired: bool = True) -> str:
    """Runs on the efficacy / paraphrase / locality front (see :func:`front`), with the probe NLL change,
    the share of probe answers that stay identical and the edit time beside them."""
    lines = ["| run | n | R-L F1 | para R-L F1 | probe tokens kept | probe answers identical | probe NLL change | "
             "edit s | on the front |", "|---|---|---|---|---|---|---|---|---|"]

    for run, eff, loc, para, on_front in sorted(front(load_runs(dirs, paired)[0]), key=lambda p: -p[1]):
        cells = [_fmt(mean([get(r, *key) for r in run.rows]), key)
                 for key in (("locality", "exact"), ("locality", "nll_change"))]
        secs = mean([get(r, "timings", "total_s") for r in run.rows])
        lines.append(f"| {run.label} | {len(run.rows)} | {eff:.2f} | {_fmt(para, ('rougeL_f',))} | {loc:.3f} | "
                     f"{' | '.join(cells)} | {secs or 0:.0f} | {'yes' if on_front else ''} |")
    return "\n".join(lines)
