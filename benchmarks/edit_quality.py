"""Edit quality on the default model: does the edited model produce the new long answer, does it carry over
to the paraphrase, and are unrelated answers left alone? Prints a markdown table.

    .venv/bin/python benchmarks/edit_quality.py [--method unke|memit] [--records ee:93,ee:180,uk:27,mq:24,ee:29]
                                                [--set KEY=VALUE ...] [--data ../shared/data]

Records: ``ee:ID`` EditEverything, ``uk:ID`` UnKEBench (has a paraphrase), ``mq:ID`` MQuAKE-CF (AKEW; the
question and ``fact_new_uns`` of its first rewrite). Each record is edited on its own and reverted.
Columns: ROUGE-L F1 (rouge-score) of the greedy answer to the question / to the paraphrase against the new
answer; locality on the 40 built-in probe prompts (token agreement under teacher forcing, identical answers,
NLL change per token); whether "What is the capital of France?" still mentions Paris; edit time.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyedit
from anyedit.cli.options import parse_set
from anyedit.eval.locality import LocalityProbe, says_paris
from anyedit.eval.scoring import ANSWER_SLACK
from anyedit.model.generation import generate
from anyedit.model.prompts import prepare_request


def load_records(spec: str, data: Path) -> list[anyedit.EditRequest]:
    files = {"ee": "editeverything_dev.json", "uk": "unkebench_dev.json", "mq": "mquake_cf_dev.json"}
    out = []
    for item in spec.split(","):
        src, rid = item.split(":")
        rows = json.loads((data / files[src]).read_text())
        key = "case_id" if src == "mq" else "id"
        rec = next(r for r in rows if str(r[key]) == rid)
        if src == "mq":
            rw = rec["requested_rewrite"]
            rw = (ast.literal_eval(rw) if isinstance(rw, str) else rw)[0]
            out.append(anyedit.EditRequest(rw["question"], rw["fact_new_uns"], id=item))
        else:
            extra = {"paraphrase": rec["para_question"]} if "para_question" in rec else {}
            out.append(anyedit.EditRequest(rec["question"], rec["answer"], id=item, extra=extra))
    return out


def record_options(ap: argparse.ArgumentParser, records: str) -> None:
    """The options every single-edit benchmark takes: method, records, overrides, data directory."""
    ap.add_argument("--method", default=None, help="default: the preset's method")
    ap.add_argument("--preset", default=None, help="a named preset instead of the model's default")
    ap.add_argument("--records", default=records)
    ap.add_argument("--set", action="append", type=parse_set, default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def model_and_config(args: argparse.Namespace) -> tuple[Any, Any, anyedit.EditConfig]:
    """The default model, its tokenizer, and the preset for ``--method`` (or ``--preset``) with the ``--set``
    overrides."""
    model, tok = anyedit.load_model()
    cfg = anyedit.preset_config(model, args.method, args.preset)
    return model, tok, cfg.with_overrides(dict(args.set)) if args.set else cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    record_options(ap, "ee:93,ee:180,uk:27,mq:24,ee:29")
    args = ap.parse_args()
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"])

    def rl(ref: str, hyp: str) -> float:
        return rouge.score(ref, hyp)["rougeL"].fmeasure

    model, tok, cfg = model_and_config(args)
    probe = LocalityProbe(model, tok, cfg.prompt)
    print(f"method {cfg.method}; overrides {dict(args.set)}")
    print("| record | answer tokens | chunks | ROUGE-L question | ROUGE-L paraphrase | probe tokens kept | "
          "probe answers identical | probe NLL change | Paris kept | edit s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for req in load_records(args.records, Path(args.data)):
        n = len(prepare_request(tok, req, cfg.prompt).target_ids)
        t = time.perf_counter()
        res = anyedit.compute_edits(model, tok, req, cfg, show_progress=False)
        secs = time.perf_counter() - t
        if "phrasings" in res.diagnostics:
            print(f"{req.id}: also edited {res.diagnostics['phrasings'][0]}", file=sys.stderr, flush=True)
        with res.applied(model):
            qs = [req.question] + ([req.extra["paraphrase"]] if "paraphrase" in req.extra else [])
            answers = generate(model, tok, qs, cfg.prompt, max_new_tokens=n + ANSWER_SLACK)
            loc = probe.compare(model)
            paris = says_paris(model, tok, cfg.prompt)
        r_q = rl(req.answer, answers[0])
        r_p = rl(req.answer, answers[1]) if len(answers) > 1 else None
        rows.append((r_q, r_p, loc.token_agreement, loc.exact, loc.nll_change, paris, secs))
        print(f"| {req.id} | {n} | {sum(len(r) for r in res.reports)} | {r_q:.2f} | "
              f"{'-' if r_p is None else f'{r_p:.2f}'} | {loc.token_agreement:.3f} | {loc.exact:.2f} | "
              f"{loc.nll_change:+.3f} | {'yes' if paris else 'no'} | {secs:.0f} |", flush=True)
    paras = [r[1] for r in rows if r[1] is not None]
    print(f"| mean | | | {statistics.mean(r[0] for r in rows):.2f} | "
          f"{statistics.mean(paras) if paras else float('nan'):.2f} | {statistics.mean(r[2] for r in rows):.3f} | "
          f"{statistics.mean(r[3] for r in rows):.2f} | {statistics.mean(r[4] for r in rows):+.3f} | "
          f"{sum(r[5] for r in rows)}/{len(rows)} | {statistics.mean(r[6] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
