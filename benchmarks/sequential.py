"""Sequential editing: N edits applied one after another on the default model; how many of the earlier
edits still reproduce at the end? AlphaEdit+ (with its running sum of earlier keys, ``EditHistory``) next
to MEMIT+. Prints a markdown table.

    .venv/bin/python benchmarks/sequential.py [--methods alphaedit,memit] [--n 10]
        [--file ../shared/data/mquake_cf_dev.json] [--set KEY=VALUE]

Records: the first N MQuAKE-CF (AKEW) records of ../shared/data (question + ``fact_new_uns``). Each edit is
computed on the model with every earlier edit applied, then applied. At the end every question is asked
again; an edit "still reproduces" when the ROUGE-L F1 of the answer vs. its new answer is >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anyedit
from anyedit.eval.datasets import load_dataset
from anyedit.model.generation import generate
from anyedit.model.prompts import prepare_request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="alphaedit,memit")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--file", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                          "mquake_cf_dev.json"))
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config override")
    args = ap.parse_args()
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"])
    model, tok = anyedit.load_model()
    records = load_dataset(args.file, limit=args.n).records
    print("| method | edits | right after its edit (R-L >= 0.9) | still at the end | mean R-L at the end | "
          "Paris kept | total s |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfg = anyedit.preset_config(model, method)
        if args.set:
            cfg = cfg.with_overrides({k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)})
        history = anyedit.EditHistory()
        applied, right_after = [], []
        t = time.perf_counter()
        try:
            for rec in records:
                req = rec.request
                res = anyedit.compute_edits(model, tok, req, cfg, show_progress=False, history=history)
                res.apply(model)
                applied.append(res)
                n = len(prepare_request(tok, req, cfg.prompt).target_ids)
                ans = generate(model, tok, req.question, cfg.prompt, max_new_tokens=n + 16)[0]
                right_after.append(rouge.score(req.answer, ans)["rougeL"].fmeasure)
            end = []
            for rec in records:
                n = len(prepare_request(tok, rec.request, cfg.prompt).target_ids)
                ans = generate(model, tok, rec.request.question, cfg.prompt, max_new_tokens=n + 16)[0]
                end.append(rouge.score(rec.request.answer, ans)["rougeL"].fmeasure)
            paris = "Paris" in generate(model, tok, "What is the capital of France?", cfg.prompt, 20)[0]
        finally:
            for res in reversed(applied):
                res.revert(model)
        secs = time.perf_counter() - t
        print(f"| {method}+ | {len(records)} | {sum(x >= 0.9 for x in right_after)} | {sum(x >= 0.9 for x in end)} | "
              f"{sum(end) / len(end):.2f} | {'yes' if paris else 'no'} | {secs:.0f} |", flush=True)
        print("  per edit, right after / at the end: " +
              ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(right_after, end)), flush=True)


if __name__ == "__main__":
    main()
