"""Time the cached value search against the full recompute on the default model and print a table.

    .venv/bin/python benchmarks/value_search_speed.py [--data ../shared/data/editeverything_dev.json] [--id 524]
        [--window 40] [--steps 25] [--joint] [--anchor-span 1] [--first-anchor prompt_end]

Both implementations run the same number of Adam steps (no early stop) on every chunk of one
EditEverything answer; the table also reports how far apart their vectors end up (fp32). ``--joint`` searches all
chunks' vectors at once (``value.joint``, one pass over the answer per step), as the default preset does; a "step"
is then one such pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import anyedit
from anyedit.config import ChunkingConfig, PromptConfig, ValueConfig
from anyedit.editing.chunking import make_chunks
from anyedit.editing.values import search_values
from anyedit.model.arch import get_spec
from anyedit.model.prompts import prepare_request
from anyedit.types import EditRequest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--data", default=str(here.parent / "shared" / "data" / "editeverything_dev.json"))
    ap.add_argument("--id", default="524", help="record id (default: a ~230-token physics answer)")
    ap.add_argument("--window", type=int, default=40)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--first-anchor", default="prompt_end")
    ap.add_argument("--joint", action="store_true", help="search all chunks' vectors at once (value.joint)")
    ap.add_argument("--anchor-span", type=int, default=1, help="chunking.anchor_span")
    args = ap.parse_args()
    rec = next(r for r in json.load(open(args.data)) if str(r["id"]) == args.id)
    model, tok = anyedit.load_model()
    spec = get_spec(model)
    prep = prepare_request(tok, EditRequest(rec["question"], rec["answer"]), PromptConfig())
    chunks = make_chunks(prep, ChunkingConfig(window=args.window, first_anchor=args.first_anchor,
                                              anchor_span=args.anchor_span))
    rows = {}
    for cached in (True, False):
        cfg = ValueConfig(cache_prefix=cached, max_steps=args.steps, stop_loss=0.0, joint=args.joint)
        t = time.perf_counter()
        rows[cached] = (search_values(model, spec, prep.ids, prep.prompt_len, chunks, args.layer, cfg),
                        time.perf_counter() - t)
    (vc, tc), (vf, tf) = rows[True], rows[False]
    rel = max(((vc.shifts[i] - vf.shifts[i]).norm() / vf.shifts[i].norm()).item() for i in range(len(vc.positions)))
    steps = max(r.steps for r in vc.reports) if args.joint else sum(r.steps for r in vc.reports)
    print(f"record {args.id} ({rec.get('category', '')}): prompt {prep.prompt_len} + answer {len(prep.target_ids)} "
          f"tokens, {len(chunks)} chunks of {args.window}, anchor span {args.anchor_span}, "
          f"{'joint' if args.joint else 'one chunk at a time'}, {steps} Adam steps in all, layer {args.layer}, "
          f"torch threads {torch.get_num_threads()}")
    print("| implementation | seconds | s/step | speed-up |")
    print("|---|---|---|---|")
    print(f"| full recompute (reference) | {tf:.1f} | {tf / steps:.3f} | 1.0x |")
    print(f"| cached prefix + replayed lower layers | {tc:.1f} | {tc / steps:.3f} | {tf / tc:.1f}x |")
    print(f"after {args.steps} steps: max relative difference of the vectors {rel:.1e}; worst final chunk NLL "
          f"(cached / full): {max(r.nll_after for r in vc.reports):.4f} / {max(r.nll_after for r in vf.reports):.4f}")
    # the same comparison after a few steps, before Adam's sign-like updates amplify float rounding differences
    few = {}
    for cached in (True, False):
        cfg = ValueConfig(cache_prefix=cached, max_steps=3, stop_loss=0.0, joint=args.joint)
        few[cached] = search_values(model, spec, prep.ids, prep.prompt_len, chunks, args.layer, cfg)
    rel3 = max(((few[True].shifts[i] - few[False].shifts[i]).norm() / few[False].shifts[i].norm()).item()
               for i in range(len(vc.positions)))
    print(f"after 3 steps: max relative difference of the vectors {rel3:.1e}")


if __name__ == "__main__":
    main()
