"""Many long edits on the default model: one after another (an edit stack) or all in one batch. Do the earlier
edits survive the later ones? Prints a markdown table.

    .venv/bin/python benchmarks/sequential.py [--methods unke] [--preset NAME] [--n 10] [--source mq|uk] [--batch]
        [--probes 40] [--set KEY=VALUE ...] [--out rows.jsonl] [--stack DIR] [--score-every K]
        [--layer-cycle L1,L2,...] [--consolidate-every K]

Records: the first N usable records of a dev sample in ../shared/data: ``mq`` MQuAKE-CF (AKEW; question +
``fact_new_uns``), ``uk`` UnKEBench (question + answer). Sequential: each edit is added to an ``EditStack`` (a
temporary directory), i.e. computed on the model with every earlier edit applied and with their history (the keys
they were written at, the texts they were made on), which the method protects; right after its own edit, the
question is asked. Batch: all N in one ``compute_edits`` call. At the end, every question is asked again (greedy)
and scored with ROUGE-L F1 against its new answer (reproduced: >= 0.9); locality is measured against the
*unedited* model on the built-in probe prompts; "Paris": "What is the capital of France?" still says Paris; "facts
kept": of the built-in factual probes the unedited model answers right, how many still are (the lost ones are listed
with their unedited decision margin); "firm": the same among those it answers by a margin of at least 0.1 nats (the
others are near-ties any small change can tip; ``anyedit.eval.locality.FactualReport``).

``--stack DIR`` keeps the sequential stack in DIR instead of a temporary directory; a run that stopped resumes
there (the edits already in it are not recomputed: their questions must be the first ones of the run, and "right
after its own edit" is then only known for the new ones). ``--score-every K`` also scores every edit made so far
after each K-th edit (a row per checkpoint: reproduced, probe tokens kept, Paris, facts), so one run of 50 gives
the figures after 10, 20, ... too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anyedit
from anyedit.cli.options import parse_set
from anyedit.eval.datasets import load_dataset
from anyedit.eval.locality import FactualProbe, LocalityProbe, says_paris
from anyedit.eval.scoring import REPRODUCED, reproduction
from anyedit.model.weights import relative_change
from anyedit.stats.preserve import builtin_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_cost import machine_unit

FILES = {"mq": "mquake_cf_dev.json", "uk": "unkebench_dev.json"}


def _scores(model, tok, requests, prompt) -> list[float]:
    return [f for _, f in reproduction(model, tok, requests, prompt)]


def _checkpoint(model, tok, done, cfg, probe, facts, secs: float, stack) -> None:
    """Score every edit made so far (the stack applied) and print one line."""
    scores = _scores(model, tok, done, cfg.prompt)
    rep = probe.compare(model) if probe is not None else None
    paris = says_paris(model, tok, cfg.prompt)
    fact_rep = facts.compare(model)
    kept = f"{rep.token_agreement:.3f}, NLL {rep.nll_change:+.3f}" if rep else "–"
    print(f"  after {len(done)}: reproduced {sum(x >= REPRODUCED for x in scores)}/{len(done)}, mean R-L "
          f"{sum(scores) / len(scores):.2f}; probe tokens kept {kept}; Paris {'yes' if paris else 'no'}; facts "
          f"{fact_rep.cell()}; weights moved {relative_change(model, stack.history().applied):.3f}; "
          f"{secs:.0f} s; not reproduced: "
          f"{[i for i, x in enumerate(scores, 1) if x < REPRODUCED]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="unke")
    ap.add_argument("--preset", default=None, help="a named preset instead of the model's default (one method)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--source", default="mq", choices=sorted(FILES))
    ap.add_argument("--batch", action="store_true", help="all N edits in one call instead of one after another")
    ap.add_argument("--probes", type=int, default=40, help="built-in probe prompts for locality (0 = off)")
    ap.add_argument("--set", action="append", type=parse_set, default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", help="also append one JSON row per run to this file")
    ap.add_argument("--stack", help="sequential: keep the stack in this directory (resumes a run that stopped)")
    ap.add_argument("--score-every", type=int, default=0, metavar="K",
                    help="sequential: score every edit so far after each K-th edit (0 = only at the end)")
    ap.add_argument("--consolidate-every", type=int, default=0, metavar="K",
                    help="sequential: after each K-th edit, replace the stack's members with one edit of all their "
                         "requests (EditStack.consolidate), before scoring")
    ap.add_argument("--layer-cycle", metavar="L1,L2,...",
                    help="sequential, one-layer methods: edit i is written at layer L[i mod k] (the edits are "
                         "spread over these layers in turn) instead of the preset's layer")
    args = ap.parse_args()
    if args.stack and (args.batch or len(args.methods.split(",")) > 1):
        ap.error("--stack is for one sequential method")
    cycle = [int(x) for x in args.layer_cycle.split(",")] if args.layer_cycle else []
    if (cycle or args.consolidate_every) and args.batch:
        ap.error("--layer-cycle and --consolidate-every are for sequential runs")
    model, tok = anyedit.load_model()
    requests = [r.request for r in load_dataset(str(Path(args.data) / FILES[args.source]), limit=args.n).records]
    mode = "batch" if args.batch else "sequential"
    unit = machine_unit(model)
    print(f"{args.source}: {len(requests)} records, {mode}; overrides {dict(args.set)}; machine unit (forward+backward"
          f" over 256 tokens) {unit:.2f} s", flush=True)
    print("| N | mode | method | reproduced right after its own edit | reproduced after all | mean R-L after all | "
          "probe tokens kept | probe NLL change | Paris kept | facts kept | total s (units) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for method in args.methods.split(","):
        cfg = anyedit.preset_config(model, method, args.preset)
        if args.set:
            cfg = cfg.with_overrides(dict(args.set))
        probe = LocalityProbe(model, tok, cfg.prompt, builtin_prompts("probe")[: args.probes]) if args.probes else None
        facts = FactualProbe(model, tok, cfg.prompt)
        right_after: list[float | None] = []
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            stack = anyedit.EditStack(Path(args.stack) if args.stack else Path(tmp) / "stack")
            if args.batch:
                res = anyedit.compute_edits(model, tok, requests, cfg, show_progress=False)
                stack.push(res)
                rounds = res.diagnostics.get("rounds", [])
                print(f"  one update of {len(requests)} requests: {len(rounds)} round(s), update steps "
                      f"{[r.get('update_steps') for r in rounds]}"
                      + (f"; the config's batch settings applied: {cfg.batch}" if cfg.batch else "")
                      + (f"; edit weights (edit_adapt) {rounds[-1]['edit_weights']}"
                         if rounds and "edit_weights" in rounds[-1] else "")
                      + (f"; answer margins measured (of a check of all) {[r['margins_measured'] for r in rounds]}"
                         if rounds and "margins_measured" in rounds[-1] else ""), flush=True)
                for k, rp in enumerate(res.diagnostics.get("repair", []), 1):  # EditConfig.repair
                    short = [m + 1 for m, x in enumerate(rp["margins"]) if x <= 0]
                    print(f"  repair check {k}: answers not reproduced (teacher-forced) {short}; edited again: "
                          + (", ".join(f"{e['request'] + 1} ({e['rounds']} round(s), {e['total_s']:.0f} s)"
                                       for e in rp["edits"]) or "none"), flush=True)
            else:
                done = [q for e in stack.entries() for q in e["questions"]]  # a consolidated member holds many
                if done != [r.question for r in requests[: len(done)]]:
                    sys.exit(f"--stack {args.stack}: its edits are not the first {len(done)} of this run")
                if done:
                    print(f"  resuming: {len(done)} edits already in {args.stack}", flush=True)
                right_after = [None] * len(done)
                for i, req in enumerate(requests[len(done):], len(done) + 1):
                    this = cfg.with_overrides({"layers": [cycle[(i - 1) % len(cycle)]]}) if cycle else cfg
                    res = stack.edit(model, tok, req, this, show_progress=False)
                    with stack.applied(model):
                        right_after += _scores(model, tok, [req], cfg.prompt)
                        moved = relative_change(model, res.deltas)
                    rounds = res.diagnostics.get("rounds", [])
                    what = "; ".join(f"{k} {[r.get(k) for r in rounds]}" for k in
                                     ("update_steps", "reproduced", "history_margin_vs_floor",
                                      "margins_measured")
                                     if any(k in r for r in rounds))
                    raised = {j + 1: w for j, w in enumerate(rounds[-1].get("history_weights", []) if rounds else [])
                              if w > 1}
                    if raised:  # backend.history_adapt: which earlier texts (1-based) it weighted up, and how far
                        what += f"; earlier texts weighted up {raised}"
                    where = f" (layer {this.layers[0]})" if cycle else ""
                    print(f"  edit {i}{where}: R-L right after {right_after[-1]:.2f}, {res.timings['total_s']:.0f} s, "
                          f"{len(rounds)} round(s); weights moved {moved:.3f}; {what} "
                          f"({time.perf_counter() - t:.0f} s so far)", flush=True)
                    if args.consolidate_every and i % args.consolidate_every == 0:
                        c0 = time.perf_counter()
                        merged = stack.consolidate(model, tok, show_progress=False)
                        with stack.applied(model):
                            moved = relative_change(model, merged.deltas)
                        print(f"  consolidated the {i} edits into one: {time.perf_counter() - c0:.0f} s, "
                              f"{len(merged.diagnostics.get('rounds', []))} round(s); weights moved {moved:.3f} "
                              f"({time.perf_counter() - t:.0f} s so far)", flush=True)
                    if args.score_every and i % args.score_every == 0 and i < len(requests):
                        with stack.applied(model):
                            _checkpoint(model, tok, requests[:i], cfg, probe, facts, time.perf_counter() - t, stack)
            secs = time.perf_counter() - t
            with stack.applied(model):
                end = _scores(model, tok, requests, cfg.prompt)
                rep = probe.compare(model) if probe is not None else None
                paris = says_paris(model, tok, cfg.prompt)
                fact_rep = facts.compare(model)
                moved = relative_change(model, stack.history().applied)
        known = [x for x in right_after if x is not None]
        after = "–" if args.batch else f"{sum(x >= REPRODUCED for x in known)}/{len(known)}"
        kept = f"{rep.token_agreement:.3f}" if rep else "–"
        nll = f"{rep.nll_change:+.3f}" if rep else "–"
        back = sum(x >= REPRODUCED for x in end)
        print(f"| {len(requests)} | {mode} | {method} | {after} | {back}/{len(requests)} | "
              f"{sum(end) / len(end):.2f} | {kept} | {nll} | {'yes' if paris else 'no'} | "
              f"{fact_rep.cell()} | {secs:.0f} ({secs / unit:.0f}) |", flush=True)
        print(f"  weights moved by all edits together: {moved:.3f} of their norm", flush=True)
        for lost in fact_rep.lost:
            print(f"  fact lost: {lost}", flush=True)
        shown = ["?" if a is None else f"{a:.2f}" for a in right_after]
        print("  per edit " + ("(right after / after all): " + ", ".join(f"{a}/{b:.2f}" for a, b in zip(shown, end))
                                if right_after else "(after all): " + ", ".join(f"{b:.2f}" for b in end)), flush=True)
        if args.out:
            row = {"source": args.source, "n": len(requests), "mode": mode, "method": method,
                   "overrides": dict(args.set), "layer_cycle": cycle,
                   "consolidate_every": args.consolidate_every, "right_after": right_after, "end": end,
                   "probe_tokens_kept": rep.token_agreement if rep else None,
                   "probe_nll_change": rep.nll_change if rep else None, "paris": paris, "facts": fact_rep.to_dict(),
                   "weights_moved": moved, "seconds": secs,
                   "machine_unit_s": unit}
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
