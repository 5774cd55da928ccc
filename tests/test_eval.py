"""Benchmark loaders, the resumable evaluation runner and the report, on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from anyedit import EditConfig
from anyedit.errors import ConfigError, RequestError
from anyedit.eval.datasets import EvalRecord, load_dataset
from anyedit.eval.plots import plots
from anyedit.eval.runner import EvalSettings, evaluate
from anyedit.eval.tables import load_run, pareto, report
from anyedit.types import EditRequest

from .tiny import same_weights, weights_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("name,fmt,has_para,has_sub,has_cat", [
    ("unkebench_dev.json", "unkebench", True, True, False),
    ("mquake_cf_dev.json", "mquake", False, True, False),
    ("editeverything_dev.json", "editeverything", False, False, True),
])
def test_loaders_read_the_original_formats(name, fmt, has_para, has_sub, has_cat):
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    ds = load_dataset(path, limit=5)
    assert ds.format == fmt and len(ds.records) == 5 and not ds.skipped
    rec = ds.records[0]
    assert rec.request.question and len(rec.request.answer.split()) > 20
    assert bool(rec.paraphrases) == has_para
    assert bool(rec.sub_questions) == has_sub and len(rec.sub_questions) <= 5
    assert (rec.category is not None) == has_cat
    if fmt == "mquake":  # the first rewrite's long answer, sub-questions filled with the subject
        raw = json.loads(path.read_text())[0]["requested_rewrite"][0]
        assert rec.request.answer == raw["fact_new_uns"]
        assert "{}" not in rec.sub_questions[0][0] and raw["subject"] in rec.sub_questions[0][0]
        assert rec.request.subject == raw["subject"]  # for first_anchor="subject_last"



def _akew(i, time=False, **extra):
    rw = {"prompt": "The mother tongue of {} is", "subject": f"Person {i}", "target_new": {"str": "French"},
          "fact_new_uns": f"Person {i} grew up speaking French at home.",
          "unsfact_triplets_GPT": [{"prompt": "{} was born in", "subject": f"Person {i}", "target": "Lyon"}]}
    if time:
        rw.update(time_true="2019", time_new="2023")
    return {"case_id": i, "requested_rewrite": rw, "paraphrase_prompts": [f"What language does Person {i} speak?"],
            **extra}


@pytest.mark.parametrize("time,fmt", [(False, "counterfact"), (True, "wikiupdate")])
def test_akew_counterfact_and_wikiupdate_records(tmp_path, time, fmt):
    p = tmp_path / "akew.json"
    p.write_text(json.dumps([_akew(7, time), _akew(8, time, paraphrase_prompts="not a list"),
                             _akew(9, time, id="x9")]))
    ds = load_dataset(p)
    assert ds.format == fmt and [r.id for r in ds.records] == ["7", "x9"]  # "id" before "case_id"
    assert ds.skipped == ["8: paraphrase_prompts must be a list of strings"]
    rec = ds.records[0]
    assert rec.request.question == "The mother tongue of Person 7 is" and rec.request.subject == "Person 7"
    assert rec.request.answer == "Person 7 grew up speaking French at home."
    assert rec.paraphrases == ("What language does Person 7 speak?",)
    assert rec.sub_questions == (("Person 7 was born in", "Lyon"),)
    assert [r.id for r in load_dataset(p, ids=["x9"]).records] == ["x9"]


def test_unkebench_record_with_unpaired_sub_questions_is_skipped(tmp_path):
    p = tmp_path / "uk.json"
    rec = {"id": 1, "question": "Q?", "para_question": "Q again?", "answer": "A long answer.",
           "sub_question": ["S1?", "S2?"], "sub_answer": ["a1", "a2"]}
    p.write_text(json.dumps([rec, {**rec, "id": 2, "sub_answer": ["a1"]}]))
    ds = load_dataset(p)
    assert [r.id for r in ds.records] == ["1"] and ds.skipped == ["2: 2 sub_question but 1 sub_answer"]
    assert ds.records[0].sub_questions == (("S1?", "a1"), ("S2?", "a2"))


def test_invalid_records_are_reported_by_id_and_skipped(tmp_path):
    p = tmp_path / "mine.jsonl"
    rows = [{"id": "ok1", "question": "Q1?", "answer": "A long answer."},
            {"id": "noanswer", "question": "Q2?"},
            {"id": "empty", "question": "Q3?", "answer": "   "},
            {"id": "badsub", "question": "Q4?", "answer": "x", "sub_questions": ["not a pair"]},
            {"id": "ok2", "question": "Q5?", "answer": "Another.", "paraphrases": ["Q5 again?"]}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_dataset(p)
    assert ds.format == "plain" and [r.id for r in ds.records] == ["ok1", "ok2"]
    assert [s.split(":")[0] for s in ds.skipped] == ["noanswer", "empty", "badsub"]
    assert ds.records[1].paraphrases == ("Q5 again?",)
    with pytest.raises(RequestError, match="dataset file not found"):
        load_dataset(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RequestError, match="neither a JSON list nor JSONL"):
        load_dataset(tmp_path / "bad.json")


def test_records_are_selected_by_id(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps([{"id": f"r{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(6)]))
    assert [r.id for r in load_dataset(p, ids=["r4", "r1"]).records] == ["r1", "r4"]  # file order
    assert [r.id for r in load_dataset(p, ids=["r4", "r1", "r2"], limit=2).records] == ["r1", "r2"]
    with pytest.raises(RequestError, match="no record with ID r9"):
        load_dataset(p, ids=["r1", "r9"])
    # records without an "id" are selected by their index in the file
    q = tmp_path / "noid.json"
    q.write_text(json.dumps([{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(3)]))
    assert [r.request.question for r in load_dataset(q, ids=["2"]).records] == ["Q2?"]


def _dataset(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps([
        {"id": str(i), "question": f"What is item {i}?", "answer": f"Item {i} is a red fox that jumps {i} times.",
         "paraphrases": [f"Tell me about item {i}."], "sub_questions": [["What colour is the fox?", "red"]],
         "category": "news" if i % 2 else "code"} for i in range(3)]))
    return load_dataset(p)


def _cfg(corpus_file, window=8):
    return EditConfig().with_overrides({"layers": [1, 2], "chunking.window": window, "value.max_steps": 3,
                                        "stats.corpus": str(corpus_file), "stats.n_tokens": 1000,
                                        "stats.max_len": 32})


def test_eval_streams_rows_resumes_after_a_kill_and_reports(llama, corpus_file, tmp_path):
    model, tok = llama
    ds = _dataset(tmp_path)
    settings = EvalSettings(n_probes=2, probe_tokens=8, embed=False, max_new_tokens=12, sub_max_new_tokens=4)
    out = tmp_path / "run"
    before = weights_of(model)
    evaluate(model, tok, ds, _cfg(corpus_file), out, settings=settings, cache_dir=tmp_path, show_progress=False)
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert same_weights(model, before), "eval must leave the model as it was"
    r0 = rows[0]
    assert set(r0["scores"]) >= {"before", "question", "paraphrase", "sub", "token_accuracy"}
    from anyedit.eval import metrics

    answer0, q0 = ds.records[0].request.answer, r0["scores"]["question"]
    expected = {**metrics.rouge(answer0, r0["prediction"]), "bleu": metrics.bleu(answer0, r0["prediction"]),
                "compat_bleu": metrics.compat_bleu(answer0, r0["prediction"])}
    assert {k: q0[k] for k in expected} == expected
    assert r0["locality"]["n_probes"] == 2 and len(r0["paraphrase_predictions"]) == 1
    # the sub-questions are also answered by the unedited model (the baseline of the sub-question scores)
    from anyedit.model.generation import generate

    assert r0["sub_before_predictions"] == generate(model, tok, ["What colour is the fox?"], _cfg(corpus_file).prompt,
                                                    max_new_tokens=4)
    assert set(r0["scores"]["sub_before"]) >= {"rouge1_r", "rougeL_f"}
    assert r0["paraphrase_before_predictions"] == generate(model, tok, ["Tell me about item 0."],
                                                           _cfg(corpus_file).prompt, max_new_tokens=12)
    assert r0["scores"]["paraphrase_before"]["rougeL_f"] == metrics.rouge(
        answer0, r0["paraphrase_before_predictions"][0])["rougeL_f"]

    # a kill during record 2: the last row is cut short -> it is dropped and redone, nothing duplicated
    text = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text(text[0] + "\n" + text[1][: len(text[1]) // 2])
    evaluate(model, tok, ds, _cfg(corpus_file), out, settings=settings, cache_dir=tmp_path, show_progress=False)
    again = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in again] == ["0", "1", "2"]
    assert again[0] == rows[0]

    with pytest.raises(ConfigError, match="different config"):
        evaluate(model, tok, ds, _cfg(corpus_file, window=4), out, settings=settings, cache_dir=tmp_path,
                 show_progress=False)

    other = tmp_path / "run4"
    evaluate(model, tok, ds, _cfg(corpus_file, window=4), other, settings=settings, cache_dir=tmp_path,
             show_progress=False)
    text = report([out, other])
    assert "| memit+ | data | 3 |" in text and "char BLEU" in text and "| para BLEU |" in text
    assert "| memit+ | data | R-L F1 | " in text and "(n=2) | " in text and "(n=1) |" in text  # code: 0, 2; news: 1
    written = {p.name for p in plots([out, other], tmp_path / "plots")}
    assert written == {"length.png", "categories.png", "chunk_sweep.png", "pareto.png"}
    front = pareto([out, other])
    assert front.count("\n") == 3  # header, rule and the two runs
    assert load_run(out).rows == again


def test_a_record_that_cannot_be_edited_is_skipped_and_the_run_goes_on(llama, corpus_file, tmp_path, monkeypatch,
                                                                        caplog):
    import anyedit.eval.runner as ev
    from anyedit.errors import EditApplyError
    from anyedit.model.weights import edits_applied

    model, tok = llama
    ds = _dataset(tmp_path)
    settings = EvalSettings(n_probes=0, embed=False, compat=False, max_new_tokens=6, sub_max_new_tokens=2)
    real = ev.compute_edits

    def fails_on_1(model, tok, req, *args, **kw):
        if req.id == "1":
            with torch.no_grad():  # a backend that fails half-way and restores what it touched
                p = model.model.layers[1].mlp.down_proj.weight
                saved = p.clone()
                p.add_(1.0)
                p.copy_(saved)
            raise EditApplyError("the memit update for layer 1 is not finite; nothing was changed")
        result = real(model, tok, req, *args, **kw)
        if req.id == "4":  # weight + update not finite: refused by apply, before any write
            def refuse(model, verify=True):
                raise EditApplyError("applying the delta to W gives NaN or Inf; nothing was changed")
            result.apply = refuse
        return result

    real_accuracy = ev.token_accuracy

    def out_of_memory_on_5(model, tok, rec, cfg):
        if rec.id == "5" and edits_applied(model):
            raise torch.OutOfMemoryError("out of memory")
        return real_accuracy(model, tok, rec, cfg)

    monkeypatch.setattr(ev, "compute_edits", fails_on_1)
    monkeypatch.setattr(ev, "token_accuracy", out_of_memory_on_5)
    long = EvalRecord("3", EditRequest("What is item 3?", " ".join(["fox"] * 300), id="3"))  # > 256 positions
    ds.records += [long, *(EvalRecord(i, EditRequest(f"What is item {i}?", f"Item {i} is a fox.", id=i))
                           for i in ("4", "5"))]
    before = weights_of(model)
    out = evaluate(model, tok, ds, _cfg(corpus_file), tmp_path / "run", settings=settings, cache_dir=tmp_path,
                   show_progress=False)
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4", "5"] and "skipped" not in rows[0]
    assert rows[1] == {"id": "1", "skipped": "EditApplyError: the memit update for layer 1 is not finite; "
                                            "nothing was changed"}
    assert re.fullmatch(r"TokenizationError: request 3: prompt \+ answer are \d+ tokens, more than the model's "
                        r"context of 256; shorten the answer", rows[3]["skipped"])
    assert rows[4]["skipped"] == "EditApplyError: applying the delta to W gives NaN or Inf; nothing was changed"
    assert rows[5]["skipped"] == "OutOfMemoryError while answering after the edit: out of memory"
    assert same_weights(model, before) and not edits_applied(model)
    evaluate(model, tok, ds, _cfg(corpus_file), out, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert len((out / "rows.jsonl").read_text().splitlines()) == 6  # a skipped record is not retried on resume
    text = report([out])
    assert "| memit+ | data | 2 (+4 skipped) |" in text
    assert "skipped 4 record(s) it could not edit: 1: EditApplyError" in text

    # resuming under other library versions warns, naming them
    manifest = json.loads((out / "run.json").read_text())
    manifest["versions"]["torch"] = "0.1"
    (out / "run.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="anyedit.eval.runner"):
        evaluate(model, tok, ds, _cfg(corpus_file), out, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert f"torch {torch.__version__} (was 0.1)" in caplog.text


def test_the_before_answers_come_from_the_unedited_model(llama, corpus_file, tmp_path, monkeypatch):
    """Each 'before' field holds what generate returned with no edit applied; the after fields with the edit."""
    import anyedit.eval.runner as ev
    from anyedit.model.weights import edits_applied

    model, tok = llama
    real, calls = ev.generate, []

    def recording(model, tokenizer, questions, *args, **kw):  # each answer tagged with the edits applied
        out = [f"{edits_applied(model)}: {a}" for a in real(model, tokenizer, questions, *args, **kw)]
        calls.append(([questions] if isinstance(questions, str) else list(questions), edits_applied(model), out))
        return out

    monkeypatch.setattr(ev, "generate", recording)
    _dataset(tmp_path)
    ds = load_dataset(tmp_path / "data.json", limit=1)
    settings = EvalSettings(n_probes=0, embed=False, compat=False, max_new_tokens=6, sub_max_new_tokens=3)
    evaluate(model, tok, ds, _cfg(corpus_file), tmp_path / "run", settings=settings, cache_dir=tmp_path,
             show_progress=False)
    row = json.loads((tmp_path / "run" / "rows.jsonl").read_text())
    sub = [(n, out) for q, n, out in calls if q == ["What colour is the fox?"]]
    assert [n for n, _ in sub] == [0, 1]
    assert row["sub_before_predictions"] == sub[0][1] and row["sub_predictions"] == sub[1][1]
    para_before = [(n, out) for q, n, out in calls if q == ["Tell me about item 0."]]
    after = [(n, out) for q, n, out in calls if q == ["What is item 0?", "Tell me about item 0."]]
    assert [n for n, _ in para_before] == [0] and [n for n, _ in after] == [1]
    assert row["paraphrase_before_predictions"] == para_before[0][1]
    assert row["paraphrase_predictions"] == after[0][1][1:] and row["prediction"] == after[0][1][0]
    question_before = [(n, out) for q, n, out in calls if q == ["What is item 0?"]]
    assert [n for n, _ in question_before] == [0] and row["before"] == question_before[0][1][0]


def test_revert_is_checked_against_the_weights_before_the_edit(llama, corpus_file, tmp_path, monkeypatch):
    """A backend that leaves a weight changed after computing the edit is caught, though the edit's own
    fingerprints (taken after the computation) agree with the reverted model."""
    import anyedit.eval.runner as ev
    from anyedit.errors import EditApplyError

    model, tok = llama
    real = ev.compute_edits

    def leaves_a_change(model, *args, **kw):  # changed before the computation, so the edit's own hashes include it
        with torch.no_grad():
            model.model.layers[2].mlp.down_proj.weight[0, 0] += 1.0
        return real(model, *args, **kw)

    monkeypatch.setattr(ev, "compute_edits", leaves_a_change)
    settings = EvalSettings(n_probes=0, embed=False, compat=False, max_new_tokens=4, sub_max_new_tokens=2)
    with pytest.raises(EditApplyError, match="model.layers.2.mlp.down_proj.weight.*differ from the weights before"):
        evaluate(model, tok, _dataset(tmp_path), _cfg(corpus_file), tmp_path / "run", settings=settings,
                 cache_dir=tmp_path, show_progress=False)


def test_report_reads_sweep_directories_and_marks_partial_columns(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _fake_run(sweep / "w10", "w10", 1.0, 0.9)
    _fake_run(sweep / "w20", "w20", 0.5, 0.95)
    (sweep / "plots").mkdir()
    text = report([sweep])
    assert "| w10 | d | 1 |" in text and "| w20 | d | 1 |" in text
    with pytest.raises(RequestError, match="plots: not an evaluation run"):
        report([sweep / "plots"])
    # a column only some rows have (rows written by an older version) says over how many rows it is the mean
    with open(sweep / "w10" / "rows.jsonl", "a") as fh:
        fh.write(json.dumps({"scores": {"question": {"rougeL_f": 0.0}}}) + "\n")
    line = next(ln for ln in report([sweep / "w10"]).splitlines() if ln.startswith("| w10 |"))
    assert "| 0.50 |" in line and "| 0.900 (1/2) |" in line


def _fake_run(path, label, eff, loc, para=None, exact=0.5, nll=0.01):
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"label": label, "dataset": {"path": "d.json"}, "config": {}}))
    scores = {"question": {"rougeL_f": eff}, "paraphrase": {"rougeL_f": para} if para is not None else {}}
    row = {"scores": scores, "locality": {"token_agreement": loc, "exact": exact, "nll_change": nll},
           "timings": {"total_s": 10.0}}
    (path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    return path


def test_pareto_front_counts_paraphrase_when_every_run_has_it(tmp_path):
    a = _fake_run(tmp_path / "a", "a", 1.0, 0.90, para=0.2)
    b = _fake_run(tmp_path / "b", "b", 0.9, 0.95, para=0.2)
    c = _fake_run(tmp_path / "c", "c", 0.8, 0.80, para=0.6)  # worse on both, best paraphrase
    d = _fake_run(tmp_path / "d", "d", 0.8, 0.80, para=0.1, nll=-0.02)  # dominated by a and b
    table = pareto([a, b, c, d])
    on = {ln.split("|")[1].strip(): ln.rstrip().endswith("| yes |") for ln in table.splitlines()[2:]}
    assert on == {"a": True, "b": True, "c": True, "d": False}
    assert "| -0.020 |" in table and "| 0.50 |" in table
    # without paraphrases in one run, the front is efficacy / locality only: c is dominated by a
    e = _fake_run(tmp_path / "e", "e", 0.7, 0.7)
    on = {ln.split("|")[1].strip(): ln.rstrip().endswith("| yes |") for ln in pareto([a, b, c, e]).splitlines()[2:]}
    assert on == {"a": True, "b": True, "c": False, "e": False}


def test_report_compares_runs_on_the_records_they_share(tmp_path):
    def run(name, scores):  # scores: id -> ROUGE-L F1
        path = tmp_path / name
        path.mkdir()
        (path / "run.json").write_text(json.dumps({"label": name, "dataset": {"path": "/d/uk.json"}, "config": {}}))
        (path / "rows.jsonl").write_text("".join(json.dumps({"id": i, "scores": {"question": {"rougeL_f": v}}}) + "\n"
                                                 for i, v in scores.items()))
        return path

    done, going = run("done", {"1": 1.0, "2": 0.5, "3": 0.0}), run("going", {"2": 0.25, "1": 0.75})
    table = report([done, going])
    assert "| done | uk | 2 | " in table and "| going | uk | 2 | " in table
    assert "uk: done, going cover different records; tables and plots use the 2" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("| done |")).split("|")
    assert row[7].strip() == "0.75"  # R-L F1 of done over records 1 and 2, not 0.50 over all three
    every = report([done, going], paired=False)
    assert "| done | uk | 3 | " in every and "cover different records" not in every
    assert "| done | uk | 2 | " in report([done, going, run("started", {})])  # no rows yet: ignored
    other = run("other", {"9": 0.1})  # another dataset file is not cut
    (other / "run.json").write_text(json.dumps({"label": "other", "dataset": {"path": "/d/mq.json"}, "config": {}}))
    assert "| other | mq | 1 | " in report([done, going, other])


def test_processes_sharing_a_run_split_the_records_and_sampling_is_seeded_per_record(llama, corpus_file, tmp_path,
                                                                                       monkeypatch):
    """Two processes on one --out directory: a record claimed by a live process is left to it, a record another
    process finished meanwhile is not redone; sampled answers do not depend on how the records were split."""
    import anyedit.eval.runner as ev
    from anyedit.eval import rundir

    model, tok = llama
    ds = _dataset(tmp_path)
    settings = EvalSettings(n_probes=0, embed=False, compat=False, max_new_tokens=12, sub_max_new_tokens=4,
                            sample_temperature=1.0)
    cfg = _cfg(corpus_file)
    out = tmp_path / "shared"
    out.mkdir()
    held = rundir.claim(out, "1")  # "another process" is evaluating record 1
    assert held is not None and rundir.claim(out, "1") is None
    real_record = ev.evaluate_record
    calls = []

    def record_then_other_process_finishes_2(model, tok, rec, *args):
        row = real_record(model, tok, rec, *args)
        calls.append(rec.id)
        if rec.id == "0":  # meanwhile the other process writes record 2
            with open(out / "rows.jsonl", "a") as fh:
                fh.write(json.dumps({**row, "id": "2", "prediction": "by the other process"}) + "\n")
        return row

    monkeypatch.setattr(ev, "evaluate_record", record_then_other_process_finishes_2)
    evaluate(model, tok, ds, cfg, out, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert calls == ["0"]  # 1 was claimed, 2 was done by the time it came up
    held.close()  # the other process dies without writing record 1
    evaluate(model, tok, ds, cfg, out, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert calls == ["0", "1"]
    rows = {r["id"]: r for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}
    assert sorted(rows) == ["0", "1", "2"] and len((out / "rows.jsonl").read_text().splitlines()) == 3

    # record 1 alone samples the same answers as after record 0 in one uninterrupted run (seed per record)
    monkeypatch.setattr(ev, "evaluate_record", real_record)
    state = torch.get_rng_state()
    full = evaluate(model, tok, ds, cfg, tmp_path / "full", settings=settings, cache_dir=tmp_path,
                    show_progress=False)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random sequence is left alone
    alone = evaluate(model, tok, load_dataset(ds.path, ids=["1"]), cfg, tmp_path / "alone", settings=settings,
                     cache_dir=tmp_path, show_progress=False)
    row1 = json.loads((alone / "rows.jsonl").read_text())
    full1 = next(r for r in map(json.loads, (full / "rows.jsonl").read_text().splitlines()) if r["id"] == "1")
    assert (row1["before"], row1["prediction"]) == (full1["before"], full1["prediction"])


def test_reproduction_asks_each_question_with_room_beyond_its_answer(llama, monkeypatch):
    """Each question is asked on its own with the new answer's length plus ANSWER_SLACK tokens, and scored by
    ROUGE-L F1 against the new answer: the answer itself scores 1, another text below REPRODUCED."""
    from anyedit.eval import scoring
    from anyedit.model.prompts import prepare_request

    model, tok = llama
    cfg = EditConfig()
    reqs = [EditRequest("Who wrote the poem?", "The poem was written by a quiet lighthouse keeper."),
            EditRequest("What is the code?", "def f(x): return x + 1")]
    asked = []

    def fake_generate(m, t, question, prompt, max_new_tokens):
        asked.append((question, max_new_tokens))
        return [reqs[0].answer if question == reqs[0].question else "something else entirely"]

    monkeypatch.setattr(scoring, "generate", fake_generate)
    out = scoring.reproduction(model, tok, reqs, cfg.prompt)
    assert asked == [(r.question, len(prepare_request(tok, r, cfg.prompt).target_ids) + scoring.ANSWER_SLACK)
                     for r in reqs]
    assert out[0] == (reqs[0].answer, 1.0)
    assert out[1][0] == "something else entirely" and out[1][1] < scoring.REPRODUCED
