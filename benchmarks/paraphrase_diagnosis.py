"""Where does an edit stop carrying over to a paraphrase, and what do the probes it changes share with it?
Prints markdown tables.

    .venv/bin/python benchmarks/paraphrase_diagnosis.py [--records uk:3,uk:27,uk:59,uk:74,uk:77] [--method M]
        [--set KEY=VALUE ...] [--out rows.jsonl]

Each record (UnKEBench: question, paraphrase, long answer) is edited on its own with the preset (or ``--set``
overrides) and reverted. Per wording (the edited question; the benchmark's paraphrase, never used for editing; the
paraphrase on the unedited model, for the baseline) and per chunk of the edit: the teacher-forced token accuracy
(the answer before the chunk given) and the fraction of the chunk greedy decoding reproduces from the chunk's start
before it departs (``anyedit.eval.diagnosis.chunk_carryover``); then ROUGE-L F1 and recall of the free greedy
answer. Locality: the probes whose teacher-forced argmax changed, the first changed token, and the probe position
whose state entering the edited layer is closest to an anchor's (``probe_divergences``); and the built-in factual
probes lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyedit
from anyedit.eval.diagnosis import chunk_carryover, probe_divergences
from anyedit.eval.locality import FactualProbe, LocalityProbe
from anyedit.eval.metrics import rouge
from anyedit.model.generation import generate
from anyedit.model.prompts import prepare_request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_quality import load_records, model_and_config, record_options  # noqa: E402


def _fmt(xs: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    record_options(ap, "uk:3,uk:27,uk:59,uk:74,uk:77")
    ap.add_argument("--out", help="also append one JSON row per record to this file")
    args = ap.parse_args()
    model, tok, cfg = model_and_config(args)
    probe = LocalityProbe(model, tok, cfg.prompt)
    facts = FactualProbe(model, tok, cfg.prompt)
    print(f"method {cfg.method}; overrides {dict(args.set)}; factual probes the unedited model answers right: "
          f"{len(facts.known)} of {len(facts.facts)}", flush=True)
    print("| record | wording | per chunk: teacher-forced token accuracy | per chunk: greedy from its start | "
          "answer R-L F1 | answer R-L recall |")
    print("|---|---|---|---|---|---|", flush=True)
    locality_lines: list[str] = []
    summary: dict[str, list[float]] = {}
    for req in load_records(args.records, Path(args.data)):
        para = req.extra.get("paraphrase")
        prep = prepare_request(tok, req, cfg.prompt)
        n = len(prep.target_ids)
        baseline = None
        res = anyedit.compute_edits(model, tok, req, cfg, show_progress=False)
        chunks = res.reports[0] if res.reports else []  # a method without value search (ft) has no chunks
        spans = [(c["start"], c["end"]) for c in chunks] or [(0, n)]  # then the whole answer is one
        if para:  # the paraphrase on the unedited model, with the edit's chunks
            baseline = chunk_carryover(model, tok, para, req.answer, spans, cfg.prompt)
            base_answer = generate(model, tok, para, cfg.prompt, max_new_tokens=n + 16)[0]
        with res.applied(model):
            rows = []
            for name, q in [("question", req.question), ("paraphrase", para)]:
                if q is None:
                    continue
                carry = chunk_carryover(model, tok, q, req.answer, spans, cfg.prompt)
                answer = generate(model, tok, q, cfg.prompt, max_new_tokens=n + 16)[0]
                rows.append((name, carry, rouge(req.answer, answer)))
            layer = res.config.layers[-1] if res.config.layers else None
            positions = [a for c in chunks for a in c["anchors"]]
            anchors = [(prep.ids, positions)] if positions else []
            changed = probe_divergences(model, probe, layer, anchors) if layer else []
            fact_rep = facts.compare(model)
            loc = probe.compare(model)
        if baseline is not None:
            rows.append(("paraphrase, unedited", baseline, rouge(req.answer, base_answer)))
        for key, v in [("probe tokens kept", loc.token_agreement), ("probe NLL change", loc.nll_change),
                       ("facts all kept", fact_rep.to_dict()["all_kept"]), ("edit s", res.timings["total_s"])]:
            summary.setdefault(key, []).append(v)
        for name, carry, r in rows:
            summary.setdefault(f"{name} R-L F1", []).append(r["rougeL_f"])
            summary.setdefault(f"{name} R-L recall", []).append(r["rougeL_r"])
            print(f"| {req.id} | {name} | {_fmt([c.tf_accuracy for c in carry])} | "
                  f"{_fmt([c.greedy_prefix for c in carry])} | {r['rougeL_f']:.2f} | {r['rougeL_r']:.2f} |",
                  flush=True)
        locality_lines.append(f"{req.id}: probe tokens kept {loc.token_agreement:.3f}, NLL change "
                              f"{loc.nll_change:+.3f}; {len(changed)} of {len(probe.prompts)} probes changed under "
                              f"teacher forcing; factual probes kept {fact_rep.kept}/{fact_rep.known}")
        for c in changed:
            locality_lines.append(f"  {c['prompt'][:50]!r}: answer token {c['first_changed']} {c['was']!r} -> "
                                  f"{c['now']!r} ({c['n_changed']} changed); closest to an anchor: "
                                  f"{c.get('probe_token')!r} ({c.get('shared_in')}) ~ {c.get('anchor_token')!r}, "
                                  f"cosine {c.get('shared_cosine', float('nan')):.2f}")
        locality_lines += [f"  fact lost: {x}" for x in fact_rep.lost]
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"record": req.id, "overrides": dict(args.set), "spans": spans,
                                    "wordings": {name: {"chunks": [c.to_dict() for c in carry], "rouge": r}
                                                 for name, carry, r in rows},
                                    "changed_probes": changed, "facts": fact_rep.to_dict(),
                                    "locality": loc.to_dict(), "edit_s": res.timings["total_s"]}) + "\n")
    print()
    print("\n".join(locality_lines))
    print()
    print("means: " + "; ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
