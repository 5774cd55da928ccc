"""Time the default model's four hot paths at each torch thread count and print a table (run it alone: another
torch process on the same cores distorts every number).

    .venv/bin/python benchmarks/threads.py [--threads 1,2] [--id 524] [--repeats 3]

Paths: the value search of one 20-token chunk, 4 Adam steps (cached prefix: what every edit spends most of its
time in; the mean over the answer's chunks), the same 4 steps for one vector over the whole answer (chunking none),
a statistics forward (4 x 256 tokens, the stats pass's batch, up to the value layer) and greedy generation (up to
64 tokens, per token). Each is timed ``--repeats`` times after
one warm-up; the table shows the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import anyedit
from anyedit.config import ChunkingConfig, PromptConfig, ValueConfig
from anyedit.editing.chunking import make_chunks
from anyedit.editing.values import search_values
from anyedit.model.arch import get_spec
from anyedit.model.generation import generate_ids
from anyedit.model.hooks import stop_after
from anyedit.model.prompts import encode_prompt, prepare_request
from anyedit.types import EditRequest


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--data", default=str(here.parent / "shared" / "data" / "editeverything_dev.json"))
    ap.add_argument("--id", default="524", help="record id (default: a ~230-token physics answer)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer", type=int, default=8)
    args = ap.parse_args()
    rec = next(r for r in json.load(open(args.data)) if str(r["id"]) == args.id)
    model, tok = anyedit.load_model()
    spec = get_spec(model)
    prep = prepare_request(tok, EditRequest(rec["question"], rec["answer"]), PromptConfig())
    windowed = make_chunks(prep, ChunkingConfig(window=20))
    whole = make_chunks(prep, ChunkingConfig(mode="none"))
    steps = 4
    cfg = ValueConfig(max_steps=steps, stop_loss=0.0)
    gen = torch.Generator().manual_seed(0)
    stats_batch = torch.randint(0, len(tok), (4, 256), generator=gen)

    def value_search(chunks):
        return lambda: search_values(model, spec, prep.ids, prep.prompt_len, chunks, args.layer, cfg)

    def stats_forward():  # as the statistics pass runs it: up to the last edited layer, no LM head
        with torch.no_grad(), stop_after(model.get_submodule(spec.layer_path(args.layer))):
            model(input_ids=stats_batch, use_cache=False)

    encoded = [encode_prompt(tok, rec["question"], PromptConfig())[0]]
    n_gen = [0]

    def generation():  # greedy; it may stop before 64 tokens, so the table shows seconds per token
        n_gen[0] = len(generate_ids(model, tok, encoded, PromptConfig(), max_new_tokens=64)[0])

    print(f"record {args.id}: prompt {prep.prompt_len} + answer {len(prep.target_ids)} tokens; {len(windowed)} chunks "
          f"of 20; median of {args.repeats} after a warm-up")
    print(f"| torch threads | value search of a 20-token chunk, {steps} steps | whole answer, {steps} steps | "
          "statistics forward 4x256 | greedy generation, per token |")
    print("|---|---|---|---|---|")
    for n in [int(x) for x in args.threads.split(",")]:
        torch.set_num_threads(n)
        w = _median_time(value_search(windowed), args.repeats) / len(windowed)
        s = _median_time(value_search(whole), args.repeats)
        f = _median_time(stats_forward, args.repeats)
        g = _median_time(generation, args.repeats) / max(n_gen[0], 1)
        print(f"| {n} | {w:.2f} s | {s:.2f} s | {f:.2f} s | {g:.3f} s ({n_gen[0]} tokens) |", flush=True)


if __name__ == "__main__":
    main()
