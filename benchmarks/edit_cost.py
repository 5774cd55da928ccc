"""What an edit costs on this machine, phase by phase, in seconds and in machine units. Prints a markdown table.

    .venv/bin/python benchmarks/edit_cost.py [--records demo,ee:93,ee:180,uk:27,mq:24,ee:29] [--method M]
                                             [--set KEY=VALUE ...] [--probes 40] [--out cost.jsonl]

The machine unit is the median over 5 runs (after one warm-up) of one forward + backward pass of the full default
model in fp32 over 256 input tokens, loss on every position (labels = inputs), gradients into every parameter. It is
measured in the same run, before and after the edits, so that costs from noisy or different machines compare.

Per record (edited on its own, then reverted): answer tokens, chunks, update rounds (a last search that finds every
chunk reproduced is counted apart: "+check"), Adam steps per chunk (mean / max, per round), seconds of statistics
(`prepare_statistics`: zero on a warm cache), value search and update per round, the edit's total in seconds and in
units; then what the edit must keep: ROUGE-L F1 (rouge-score) of the greedy answer against the new answer, probe
tokens kept and NLL change on the built-in probe prompts, whether "What is the capital of France?" still
mentions Paris, how many of the built-in factual probes the unedited model answers right still are (also among the
"firm" ones it answers by a margin of at least 0.1 nats, not by a near-tie), and how far the
edit moved the weights it changed (||change||_F / ||weights||_F over its matrices).
Records: ``demo`` (anyedit demo's answer) and those of benchmarks/edit_quality.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

import torch

import anyedit
from anyedit.eval.locality import FactualProbe, LocalityProbe, says_paris
from anyedit.eval.scoring import reproduction
from anyedit.model.prompts import prepare_request
from anyedit.model.weights import relative_change
from anyedit.stats.preserve import builtin_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_quality import load_records, model_and_config, record_options  # noqa: E402


def machine_unit(model: torch.nn.Module, repeats: int = 5, tokens: int = 256) -> float:
    """Seconds of one forward + backward of ``model`` over ``tokens`` tokens (median of ``repeats``, 1 warm-up)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), generator=gen)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    times = []
    try:
        for p in params:
            p.requires_grad_(True)
        for i in range(repeats + 1):
            t = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            if i:
                times.append(time.perf_counter() - t)
            model.zero_grad(set_to_none=True)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return statistics.median(times)


def _records(spec: str, data: Path) -> list[anyedit.EditRequest]:
    out = []
    for item in spec.split(","):
        if item == "demo":
            demo = json.loads(resources.files("anyedit").joinpath("data/demo.json").read_text(encoding="utf-8"))
            out.append(anyedit.EditRequest.from_dict({**demo, "id": "demo"}))
        else:
            out.extend(load_records(item, data))
    return out


def _per_round(res: anyedit.EditResult, key: str) -> list:
    return [r.get(key) for r in res.diagnostics.get("rounds", [])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    record_options(ap, "demo,ee:93,ee:180,uk:27,mq:24,ee:29")
    ap.add_argument("--probes", type=int, default=40, help="built-in probe prompts for locality (0 = off)")
    ap.add_argument("--out", help="also append one JSON row per record to this file")
    args = ap.parse_args()

    model, tok, cfg = model_and_config(args)
    unit = machine_unit(model)
    print(f"method {cfg.method}; overrides {dict(args.set)}; torch threads {torch.get_num_threads()}")
    print(f"machine unit (forward+backward, 256 tokens, fp32): {unit:.3f} s", flush=True)
    t = time.perf_counter()
    prepared = anyedit.prepare_statistics(model, tok, cfg, show_progress=False)
    stats_s = time.perf_counter() - t
    print(f"statistics (prepare_statistics, once for all records): {stats_s:.1f} s = {stats_s / unit:.1f} units "
          f"({'; '.join(prepared) or 'none'})", flush=True)
    probe = LocalityProbe(model, tok, cfg.prompt, builtin_prompts("probe")[: args.probes]) if args.probes else None
    facts = FactualProbe(model, tok, cfg.prompt)
    print("| record | answer tokens | chunks | rounds | Adam steps per chunk (mean/max, per round) | value search s "
          "(per round) | update s (per round) | edit s | edit units | ROUGE-L | probe tokens kept | probe NLL change "
          "| Paris kept | facts kept | weights moved |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for req in _records(args.records, Path(args.data)):
        n = len(prepare_request(tok, req, cfg.prompt).target_ids)
        res = anyedit.compute_edits(model, tok, req, cfg, show_progress=False)
        secs = res.timings["total_s"]
        with res.applied(model):
            (_, rouge_l), = reproduction(model, tok, [req], cfg.prompt)
            loc = probe.compare(model) if probe is not None else None
            paris = says_paris(model, tok, cfg.prompt)
            fact_rep = facts.compare(model)
            moved = relative_change(model, res.deltas)
        steps = [s for s in _per_round(res, "chunk_steps") if s]
        check = res.diagnostics.get("final_check")
        searches = _per_round(res, "value_search_s") + ([check["value_search_s"]] if check else [])
        row = {"record": req.id, "answer_tokens": n, "chunks": sum(len(r) for r in res.reports),
               "rounds": len(res.diagnostics.get("rounds", [])), "final_check": check is not None,
               "steps": steps, "value_search_s": searches, "update_s": _per_round(res, "update_s"),
               "statistics_s": res.timings.get("statistics_s", 0.0), "edit_s": secs, "unit_s": unit,
               "edit_units": secs / unit, "rougeL_f": rouge_l,
               "probe_tokens_kept": loc.token_agreement if loc else None, "probe_nll_change": loc.nll_change
               if loc else None, "paris": paris, "facts": fact_rep.to_dict(),
               "realised_fraction": _per_round(res, "realised_fraction"),
               "anchor_mse": _per_round(res, "anchor_mse"), "weights_moved": moved}
        rows.append(row)
        step_text = "; ".join(f"{statistics.mean(s):.0f}/{max(s)}" for s in steps) or "-"
        print(f"| {req.id} | {n} | {row['chunks']} | {row['rounds']}{' +check' if check else ''} | {step_text} | "
              f"{' + '.join(f'{x:.0f}' for x in searches)} | {' + '.join(f'{x:.0f}' for x in row['update_s'])} | "
              f"{secs:.0f} | {secs / unit:.0f} | {row['rougeL_f']:.2f} | "
              f"{'-' if loc is None else f'{loc.token_agreement:.3f}'} | "
              f"{'-' if loc is None else f'{loc.nll_change:+.3f}'} | {'yes' if paris else 'no'} | "
              f"{fact_rep.cell()} | {moved:.3f} |", flush=True)
        for lost in fact_rep.lost:
            print(f"  fact lost: {lost}", flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({**row, "method": cfg.method, "overrides": dict(args.set)}) + "\n")
    if len(rows) > 1:
        print(f"| mean | | | | | | | {statistics.mean(r['edit_s'] for r in rows):.0f} | "
              f"{statistics.mean(r['edit_units'] for r in rows):.0f} | "
              f"{statistics.mean(r['rougeL_f'] for r in rows):.2f} | | | {sum(r['paris'] for r in rows)}/{len(rows)} | "
              f"all kept on {sum(r['facts']['all_kept'] for r in rows)}/{len(rows)} |")
    after = machine_unit(model)
    print(f"machine unit again after the edits: {after:.3f} s ({100 * (after / unit - 1):+.0f}%)")


if __name__ == "__main__":
    main()
