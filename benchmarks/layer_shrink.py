"""What weight decay towards zero alone does to the default model: every matrix of one decoder layer scaled by
(1 - s), as AdamW's decoupled decay does over many update steps (lr 1e-3 x wd 0.01 = 1e-5 a step, so about 0.06%
over an edit's 60 steps and a few percent over a stack of dozens of edits). Prints a markdown table.

    .venv/bin/python benchmarks/layer_shrink.py [--layer 8] [--shrink 0.015,0.05] [--probes 40]

Locality as in the other benchmarks: probe tokens kept and NLL change on the built-in probe prompts against the
unscaled model, "capital of France" still says Paris, and the built-in factual probes the unscaled model answers
right that still are.
"""

from __future__ import annotations

import argparse

import torch

import anyedit
from anyedit.eval.locality import FactualProbe, LocalityProbe, says_paris
from anyedit.model.arch import get_spec
from anyedit.stats.preserve import builtin_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--shrink", default="0.015,0.05", help="comma-separated fractions s")
    ap.add_argument("--probes", type=int, default=40)
    args = ap.parse_args()
    model, tok = anyedit.load_model()
    probe = LocalityProbe(model, tok, None, builtin_prompts("probe")[: args.probes])
    facts = FactualProbe(model, tok)
    layer = model.get_submodule(get_spec(model).layer_path(args.layer))
    mats = [p for p in layer.parameters() if p.ndim >= 2]
    original = [p.detach().clone() for p in mats]
    print(f"| layer {args.layer} matrices scaled by | probe tokens kept | probe NLL change | Paris kept | facts kept |")
    print("|---|---|---|---|---|", flush=True)
    try:
        for s in (float(x) for x in args.shrink.split(",")):
            with torch.no_grad():
                for p, p0 in zip(mats, original):
                    p.copy_(p0 * (1 - s))
            rep, fact_rep = probe.compare(model), facts.compare(model)
            paris = says_paris(model, tok)
            print(f"| 1 - {s:g} | {rep.token_agreement:.3f} | {rep.nll_change:+.4f} | {'yes' if paris else 'no'} | "
                  f"{fact_rep.kept}/{fact_rep.known} |", flush=True)
    finally:
        with torch.no_grad():
            for p, p0 in zip(mats, original):
                p.copy_(p0)


if __name__ == "__main__":
    main()
