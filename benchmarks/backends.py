"""Every backend with AnyEdit chunking (the "+" variants) and without (the single-token baseline), on the
default model. Prints a markdown table.

    .venv/bin/python benchmarks/backends.py [--methods memit,alphaedit,unke] [--records ee:93,uk:27,mq:24]
                                            [--modes chunked,single] [--probes 10] [--set KEY=VALUE]

Each method uses its preset for the model (``anyedit presets --method M``); "single" is the same preset with
``chunking.mode=none`` and ``chunking.first_anchor=prompt_end`` (one target, the whole answer, at the last
prompt token, as the reference's baselines). Columns: ROUGE-L F1 of the greedy answer vs. the new answer,
token agreement on unrelated probe prompts, whether "capital of France" still gives Paris, and the edit time.
Methods whose value settings are equal (memit and alphaedit) share the first round's value search
(``ValueCache``): the time column of the second one does not include it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from edit_quality import load_records  # noqa: E402  (same directory)

import anyedit
from anyedit.editing.values import ValueCache
from anyedit.eval.locality import LocalityProbe, says_paris
from anyedit.eval.scoring import reproduction
from anyedit.model.prompts import prepare_request
from anyedit.stats.preserve import builtin_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="memit,alphaedit,unke")
    ap.add_argument("--records", default="ee:93,uk:27,mq:24")
    ap.add_argument("--modes", default="chunked,single")
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config override for every method")
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    model, tok = anyedit.load_model()
    probe = LocalityProbe(model, tok, prompts=builtin_prompts("probe")[: args.probes], max_new_tokens=32)
    records = load_records(args.records, Path(args.data))
    values = ValueCache()  # backends with the same value settings share the first round's vectors
    print("| method | mode | record | answer tokens | ROUGE-L F1 | probe tokens kept | Paris kept | edit s |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for method in args.methods.split(","):
        for mode in args.modes.split(","):
            cfg = anyedit.preset_config(model, method).with_overrides(overrides)
            if mode == "chunked" and cfg.chunking.mode == "none":
                summary[(method, mode)] = None  # ft has no hidden-state targets: nothing to chunk
                continue
            if mode == "single":
                cfg = cfg.with_overrides({"chunking.mode": "none", "chunking.first_anchor": "prompt_end"})
            scores = []
            for req in records:
                n = len(prepare_request(tok, req, cfg.prompt).target_ids)
                t = time.perf_counter()
                res = anyedit.compute_edits(model, tok, req, cfg, show_progress=False, value_cache=values)
                secs = time.perf_counter() - t
                with res.applied(model):
                    (_, r), = reproduction(model, tok, [req], cfg.prompt)
                    loc = probe.compare(model)
                    paris = says_paris(model, tok, cfg.prompt)
                scores.append(r)
                print(f"| {method} | {mode} | {req.id} | {n} | {r:.2f} | {loc.token_agreement:.3f} | "
                      f"{'yes' if paris else 'no'} | {secs:.0f} |", flush=True)
            summary[(method, mode)] = statistics.mean(scores)
    print()
    print("| method | " + " | ".join(args.modes.split(",")) + " |")
    print("|---|" + "---|" * len(args.modes.split(",")))
    for method in args.methods.split(","):
        cells = [summary[(method, m)] for m in args.modes.split(",")]
        print(f"| {method} | " + " | ".join("n/a" if c is None else f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
