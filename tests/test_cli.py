"""The command line on tiny models saved to disk: the happy path and every bad input (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
import torch

from anyedit.cli import main
from anyedit.errors import ConfigError

from .tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, kind, seed in (("a", "llama", 0), ("b", "llama", 1)):
        d = root / name
        tiny_model(kind, seed=seed).save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        out[name] = d
    import transformers as tf

    d = root / "unsupported"
    cfg = tf.OPTConfig(vocab_size=len(tiny_tokenizer()), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    out["unsupported"] = d
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    out["corpus"] = corpus
    return out


def _fast(model_dirs, tmp_path, probes=0):
    """Options of a quick edit; ``probes=None`` leaves ``--probes`` to the caller."""
    return ["--cache-dir", str(tmp_path / "cache"), "--method", "memit", "--layers", "1-2", "--chunking", "window:6",
            "--corpus", str(model_dirs["corpus"]), "--set", "stats.n_tokens=300", "--set", "stats.max_len=32",
            "--set", "value.max_steps=3", *(["--probes", str(probes)] if probes is not None else []), "-q"]


def test_stats_precomputes_what_the_edit_loads(model_dirs, tmp_path, capsys, monkeypatch):
    """`anyedit stats` with the same settings as a later `anyedit edit` leaves that edit nothing to compute:
    the text statistics and, with preserve_weight > 0, the chat-preservation conversations and theirs."""
    from anyedit.stats import covariance as stats_mod
    from anyedit.stats import preserve as preserve_mod

    opts = ["--model", str(model_dirs["a"]), *_fast(model_dirs, tmp_path, probes=None)[:-1],
            "--set", "backend.preserve_weight=1", "--set", "preserve.n_prompts=4", "--set", "preserve.answer_tokens=6",
            "-q"]
    assert main(["stats", *opts]) == 0
    out = capsys.readouterr().out
    assert "memit statistics ready in" in out
    assert "key statistics of layers [1, 2]" in out and "chat-preservation conversations at layers [1, 2]" in out

    def boom(*a, **k):
        raise AssertionError("computed at edit time although `anyedit stats` ran")

    monkeypatch.setattr(stats_mod, "compute_second_moments", boom)
    monkeypatch.setattr(preserve_mod, "generate_ids", boom)
    assert main(["edit", "--question", "What is the answer?", "--answer", "Paris is the capital.", "--probes", "0",
                 *opts]) == 0

def _bad(capsys, argv, expect):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("anyedit: error:"), err
    assert expect in lines[0], lines[0]


def test_edit_save_then_ask_with_the_edit(model_dirs, tmp_path, capsys):
    save = tmp_path / "edit"
    argv = ["edit", "--model", str(model_dirs["a"]), "--question", "What is the answer?",
            "--answer", "The capital of France is Paris.", "--out", str(save), *_fast(model_dirs, tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--- before the edit ---" in out and "--- after the edit ---" in out
    assert (save / "edit.json").is_file() and (save / "deltas.safetensors").is_file()
    assert main(["ask", "--model", str(model_dirs["a"]), "--question", "What is the answer?", "--edit", str(save),
                 "--max-new-tokens", "5", "-q", "--cache-dir", str(tmp_path / "cache")]) == 0
    answer = capsys.readouterr().out
    assert answer.strip() and "anyedit" not in answer  # only the answer on stdout
    # the answer is the edited model's: what generate gives with the saved edit applied, not the base model's
    import transformers as tf

    from anyedit.editing.result import load_edits
    from anyedit.model.generation import generate

    model = tf.AutoModelForCausalLM.from_pretrained(model_dirs["a"])
    tok = tf.AutoTokenizer.from_pretrained(model_dirs["a"])
    edit = load_edits(save)
    plain = generate(model, tok, "What is the answer?", edit.config.prompt, max_new_tokens=5)[0]
    with edit.applied(model):
        edited = generate(model, tok, "What is the answer?", edit.config.prompt, max_new_tokens=5)[0]
    assert edited != plain and answer == edited + "\n"


def test_edit_summary_names_the_first_round_and_the_round_count(model_dirs, tmp_path, capsys):
    argv = ["edit", "--model", str(model_dirs["a"]), "--question", "What is the answer?",
            "--answer", "The capital of France is Paris.", *_fast(model_dirs, tmp_path, probes=2), "--set", "rounds=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    summary = [ln for ln in out if ln.startswith("edited 1 request(s)")]
    assert len(summary) == 1, summary
    assert "the first update realised" in summary[0] and summary[0].endswith(", 2 refinement rounds in all")
    assert any(ln.startswith("locality on 2 unrelated prompts: ") for ln in out), out  # --probes 2


def test_requests_file_and_apply(model_dirs, tmp_path, capsys):
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps({"question": f"Q{i}?", "answer": f"The quick fox {i}."}) for i in range(2)))
    save, out_model = tmp_path / "edit", tmp_path / "edited-model"
    assert main(["edit", "--model", str(model_dirs["a"]), "--requests", str(reqs), "--out", str(save),
                 "--no-compare", *_fast(model_dirs, tmp_path)]) == 0
    assert main(["apply", "--model", str(model_dirs["a"]), "--edit", str(save), "--out", str(out_model), "-q",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    from transformers import AutoModelForCausalLM

    edited = AutoModelForCausalLM.from_pretrained(out_model)
    base = AutoModelForCausalLM.from_pretrained(model_dirs["a"])
    changed = [n for n, p in edited.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("mlp.down_proj" in n for n in changed)
    capsys.readouterr()


def test_edit_stack_from_the_command_line(model_dirs, tmp_path, capsys):
    """`edit --stack` adds edits one after the other; `ask`/`apply --edit STACK` apply them all in order; `stack list`
    shows them, `stack pop` removes the last, `stack consolidate` merges them into one; another model is refused."""
    import transformers as tf

    from anyedit.editing.stack import EditStack
    from anyedit.model.generation import generate

    stack = tmp_path / "stack"
    for q, a in (("What is the answer?", "The capital of France is Paris."), ("Who is it?", "A quick brown fox.")):
        assert main(["edit", "--model", str(model_dirs["a"]), "--question", q, "--answer", a, "--stack", str(stack),
                     "--no-compare", *_fast(model_dirs, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "as member 1" in out and "as member 2" in out
    assert main(["stack", "list", str(stack)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "2 edit(s)" in listing[0] and "What is the answer?" in listing[1] and "Who is it?" in listing[2]
    # ask with the stack = the base model with both edits applied in order
    assert main(["ask", "--model", str(model_dirs["a"]), "--question", "Who is it?", "--edit", str(stack),
                 "--max-new-tokens", "5", "-q", "--cache-dir", str(tmp_path / "cache")]) == 0
    answer = capsys.readouterr().out
    model = tf.AutoModelForCausalLM.from_pretrained(model_dirs["a"])
    tok = tf.AutoTokenizer.from_pretrained(model_dirs["a"])
    opened = EditStack(stack)
    with opened.applied(model):
        expected = generate(model, tok, "Who is it?", opened.config.prompt, max_new_tokens=5)[0]
        stacked = {n: p.clone() for n, p in model.state_dict().items()}
    assert answer == expected + "\n"
    out_model = tmp_path / "stacked-model"
    assert main(["apply", "--model", str(model_dirs["a"]), "--edit", str(stack), "--out", str(out_model), "-q",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    written = tf.AutoModelForCausalLM.from_pretrained(out_model).state_dict()
    assert all(torch.equal(written[n], p) for n, p in stacked.items() if n in written)
    _bad(capsys, ["ask", "--model", str(model_dirs["b"]), "--question", "Q?", "--edit", str(stack), "-q",
                  "--cache-dir", str(tmp_path / "cache")], "differs in")
    assert main(["stack", "pop", str(stack)]) == 0
    assert "1 left" in capsys.readouterr().out and len(EditStack(stack)) == 1
    _bad(capsys, ["stack", "list", str(tmp_path)], "is not an edit stack")
    # consolidate: the members become one edit of all their questions, computed on the base model
    cache = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    _bad(capsys, ["stack", "consolidate", str(stack), "--model", str(model_dirs["a"]), *cache],
         "nothing to consolidate")
    assert main(["edit", "--model", str(model_dirs["a"]), "--question", "Who is it?", "--answer", "A quick brown fox.",
                 "--stack", str(stack), "--no-compare", *_fast(model_dirs, tmp_path)]) == 0
    _bad(capsys, ["stack", "consolidate", str(stack), "--model", str(model_dirs["b"]), *cache], "differs in")
    _bad(capsys, ["stack", "consolidate", str(stack), "--model", str(model_dirs["a"]), "--set", "rounds=0", *cache],
         "rounds")
    assert len(EditStack(stack)) == 2
    assert main(["stack", "consolidate", str(stack), "--model", str(model_dirs["a"]), "--set", "rounds=1",
                 *cache]) == 0
    assert "consolidated 2 edits" in capsys.readouterr().out
    merged = EditStack(stack)
    assert len(merged) == 1 and merged.entries()[0]["questions"] == ["What is the answer?", "Who is it?"]
    with merged.applied(model):
        pass
    # edit --consolidate-every K: consolidated once K edits were added since the last consolidation
    edit3 = ["edit", "--model", str(model_dirs["a"]), "--question", "Why?", "--answer", "Because it rained.",
             "--no-compare", *_fast(model_dirs, tmp_path)]
    _bad(capsys, [*edit3, "--consolidate-every", "2"], "--consolidate-every needs --stack")
    _bad(capsys, [*edit3, "--stack", str(stack), "--consolidate-every", "-1"], "--consolidate-every must be >= 0")
    assert len(EditStack(stack)) == 1
    assert main([*edit3, "--stack", str(stack), "--consolidate-every", "2"]) == 0
    assert "consolidated" not in capsys.readouterr().out and len(EditStack(stack)) == 2  # 1 since the last one
    edit3[edit3.index("Why?")] = "When?"
    assert main([*edit3, "--stack", str(stack), "--consolidate-every", "2"]) == 0
    assert "consolidated the stack's 3 members into one edit of 4 request(s)" in capsys.readouterr().out
    merged = EditStack(stack)
    assert len(merged) == 1 and merged.entries()[0]["consolidates"] == 3
    assert merged.entries()[0]["questions"] == ["What is the answer?", "Who is it?", "Why?", "When?"]


def test_empty_answer(model_dirs, tmp_path, capsys):
    save = tmp_path / "edit"
    _bad(capsys, ["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "  ", "--out", str(save),
                  *_fast(model_dirs, tmp_path)], "answer is empty")
    assert not save.exists()


def test_missing_files(model_dirs, tmp_path, capsys):
    _bad(capsys, ["edit", "--requests", str(tmp_path / "none.json")], "--requests file not found")
    _bad(capsys, ["edit", "--question", "Q?", "--answer-file", str(tmp_path / "none.txt")], "--answer-file not found")
    _bad(capsys, ["edit", "--model", str(tmp_path / "no-model"), "--question", "Q?", "--answer", "A",
                  "--cache-dir", str(tmp_path)], "cannot load model")


def test_bad_requests_file(model_dirs, tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text("{broken")
    _bad(capsys, ["edit", "--requests", str(f)], "not valid JSON")
    f.write_text(json.dumps([{"question": "Q?"}]))
    _bad(capsys, ["edit", "--requests", str(f)], "missing field")


def test_unknown_method(model_dirs, tmp_path, capsys):
    _bad(capsys, ["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "A", "--method", "nope"],
         "unknown method")


def test_named_presets_are_listed_shown_and_a_wrong_name_refused(model_dirs, tmp_path, capsys):
    assert main(["presets", "--model", str(model_dirs["a"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preset: small-chat-unke\n") and "small-chat-unke-paraphrase" in out.splitlines()[-1]
    assert "for an edit of more than one request" in out and "backend.steps=300" in out
    assert main(["presets", "--model", str(model_dirs["a"]), "--preset", "small-chat-unke-paraphrase"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preset: small-chat-unke-paraphrase\n") and '"first_window": 5' in out
    save = tmp_path / "edit"
    _bad(capsys, ["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "A.", "--preset", "nope",
                  "--out", str(save), "-q"], "no preset named 'nope'")
    assert not save.exists()


def test_unknown_model_type(model_dirs, tmp_path, capsys):
    save = tmp_path / "edit"
    _bad(capsys, ["edit", "--model", str(model_dirs["unsupported"]), "--question", "Q?", "--answer", "A.",
                  "--out", str(save), "--cache-dir", str(tmp_path), "-q"], "not supported")
    assert not save.exists()


def test_corrupt_edit_directory(model_dirs, tmp_path, capsys):
    d = tmp_path / "edit"
    d.mkdir()
    (d / "edit.json").write_text("{}")
    (d / "deltas.safetensors").write_bytes(b"junk")
    _bad(capsys, ["ask", "--model", str(model_dirs["a"]), "--question", "Q?", "--edit", str(d)], "format_version")
    _bad(capsys, ["ask", "--question", "Q?", "--edit", str(tmp_path / "missing")], "not found")


def test_edit_on_a_different_model_is_refused(model_dirs, tmp_path, capsys):
    save = tmp_path / "edit"
    assert main(["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "The quick fox.",
                 "--out", str(save), "--no-compare", *_fast(model_dirs, tmp_path)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    _bad(capsys, ["ask", "--model", str(model_dirs["b"]), "--question", "Q?", "--edit", str(save), "-q",
                  "--cache-dir", str(tmp_path / "cache")], "made for")
    _bad(capsys, ["apply", "--model", str(model_dirs["b"]), "--edit", str(save), "--out", str(out), "-q",
                  "--cache-dir", str(tmp_path / "cache")], "made for")
    assert not out.exists()


def test_existing_output_directory_is_not_overwritten(model_dirs, tmp_path, capsys):
    save = tmp_path / "edit"
    save.mkdir()
    (save / "keep.txt").write_text("mine")
    _bad(capsys, ["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "A.", "--out",
                  str(save)], "not empty")
    assert (save / "keep.txt").read_text() == "mine"


COMMANDS = {"edit", "demo", "ask", "apply", "stack", "stats", "presets", "eval", "sweep", "report"}


def _help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command_and_each_command_has_its_own_help(capsys):
    import re

    listed = set(re.findall(r"^ {4}(\w+) {2,}\S", _help(capsys, []), flags=re.M))  # the command column
    assert listed == COMMANDS
    for cmd in COMMANDS:
        assert _help(capsys, [cmd]).startswith(f"usage: anyedit {cmd} ")


def test_eval_and_sweep_share_their_options_with_help_text(capsys):
    """sweep takes the same dataset and scoring options as eval (its own copies had drifted: no help text, the
    reference metrics and MiniLM hard-coded off)."""
    import argparse

    from anyedit.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    def options(cmd):
        return {a.option_strings[-1]: a for a in sub.choices[cmd]._actions if a.option_strings}

    ev, sw = options("eval"), options("sweep")
    shared = {"--dataset", "--format", "--limit", "--ids", "--probes", "--temperature", "--max-new-tokens",
              "--sub-max-new-tokens", "--reference-decoding", "--no-compat", "--no-similarity", "--seed"}
    assert shared <= set(ev) and shared <= set(sw)
    for opt in shared:
        assert ev[opt].help and len(ev[opt].help) > 10, opt
        for field in ("help", "default", "type", "choices", "required"):
            assert getattr(ev[opt], field) == getattr(sw[opt], field), (opt, field)
    assert "{auto,unkebench," in _help(capsys, ["eval"])  # --format lists its choices
    # every option of every command explains itself
    for cmd in COMMANDS:
        assert all(a.help for a in options(cmd).values()), [o for o, a in options(cmd).items() if not a.help]


def test_eval_then_report(model_dirs, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"id": str(i), "question": f"What is {i}?", "answer": f"It is {i} foxes."})
                              for i in range(2)) + "\n{\"id\": \"broken\", \"question\": \"Q?\"}")
    out = tmp_path / "run"
    fast = _fast(model_dirs, tmp_path, probes=None)
    argv = ["eval", "--model", str(model_dirs["a"]), "--dataset", str(data), "--out", str(out), "--probes", "1",
            "--no-similarity", "--max-new-tokens", "8", *fast]
    assert main([*argv[:-len(fast)], "--ids", "1", "--out", str(tmp_path / "one"), *fast]) == 0
    assert [json.loads(r)["id"] for r in (tmp_path / "one" / "rows.jsonl").read_text().splitlines()] == ["1"]
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "| memit+ | data | 2 |" in captured.out and "broken" in captured.err
    assert main(["report", str(out), "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "length.png").is_file()
    assert main(["report", str(out)]) == 0 and (out / "plots" / "length.png").is_file()  # plots by default
    run = json.loads((out / "run.json").read_text())
    assert run["skipped_records"] == ["broken: missing field 'answer'"]
    assert run["settings"]["sub_max_new_tokens"] == 64
    # the reference's decoding, one option overridden
    ref = tmp_path / "ref"
    assert main([*argv[:-len(fast)], "--out", str(ref), "--ids", "0", "--reference-decoding",
                 "--sub-max-new-tokens", "5", *fast]) == 0
    settings = json.loads((ref / "run.json").read_text())["settings"]
    assert (settings["sample_temperature"], settings["max_new_tokens"], settings["sub_max_new_tokens"]) == (0.001, 8, 5)


def test_sweep_runs_every_setting(model_dirs, tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": "1", "question": "What is 1?", "answer": "It is one fox."}]))
    fast = _fast(model_dirs, tmp_path, probes=None)
    argv = ["sweep", "--model", str(model_dirs["a"]), "--dataset", str(data), "--out", str(tmp_path / "sw"),
            "--grid", "chunking.window=3,6", "--probes", "1", "--no-similarity", "--max-new-tokens", "8", *fast]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "chunking.window=3" in out and "chunking.window=6" in out and "on the front" in out
    assert (tmp_path / "sw" / "plots" / "chunk_sweep.png").is_file()
    settings = json.loads((tmp_path / "sw" / "chunking.window=3" / "run.json").read_text())["settings"]
    assert (settings["n_probes"], settings["compat"], settings["embed"]) == (1, True, False)  # as eval's options
    assert settings["max_new_tokens"] == 8
    capsys.readouterr()
    assert main(["report", str(tmp_path / "sw"), "--no-plots"]) == 0  # the sweep directory stands for its runs
    out = capsys.readouterr().out
    assert "| chunking.window=3 |" in out and "| chunking.window=6 |" in out and "wrote" not in out
    _bad(capsys, ["sweep", "--model", str(model_dirs["a"]), "--dataset", str(data), "--out", str(tmp_path / "s2"),
                  "--grid", "chunking.nonsense=1", *fast], "unknown config field")
    assert not (tmp_path / "s2").exists()


def test_eval_bad_inputs(model_dirs, tmp_path, capsys):
    _bad(capsys, ["eval", "--dataset", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")],
         "dataset file not found")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 1, "question": "Q?", "answer": " "}]))
    _bad(capsys, ["eval", "--dataset", str(bad), "--out", str(tmp_path / "o")], "no valid")
    _bad(capsys, ["report", str(tmp_path / "nothing")], "not an evaluation run")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "a", "question": "Q?", "answer": "A."}]))
    _bad(capsys, ["eval", "--dataset", str(good), "--ids", "a,zz", "--out", str(tmp_path / "o")],
         "no record with ID zz")
    assert not (tmp_path / "o").exists()


def test_a_smaller_window_on_the_command_line_shrinks_the_presets_snap():
    from anyedit import EditConfig
    from anyedit.cli.options import fit_snap, parse_chunking

    cfg = EditConfig().with_overrides({"chunking.window": 20, "chunking.snap": 3})
    assert fit_snap(cfg, parse_chunking("window:6"))["chunking.snap"] == 2
    assert fit_snap(cfg, parse_chunking("window:40"))["chunking.snap"] == 3
    assert fit_snap(cfg, parse_chunking("window:40:10"))["chunking.snap"] == 0
    assert cfg.with_overrides(fit_snap(cfg, parse_chunking("window:3"))).chunking.snap == 1
    assert fit_snap(cfg, {"layers": [1]}) == {"layers": [1]}
    explicit = {**parse_chunking("window:6"), "chunking.snap": 3}  # the user's own value is kept and validated
    with pytest.raises(ConfigError, match="half the window"):
        cfg.with_overrides(fit_snap(cfg, explicit))


def test_chunking_none_is_the_single_token_baseline_unless_the_anchor_is_set():
    import argparse

    from anyedit.cli.options import build_config, parse_chunking

    model = tiny_model("llama")

    def cfg(*sets):
        args = argparse.Namespace(method="memit", config=None, layers=None, chunking=parse_chunking("none"),
                                  corpus=None, set=list(sets))
        return build_config(args, model).chunking

    assert cfg().mode == "none" and cfg().first_anchor == "prompt_end"  # not the preset's
    assert cfg(("chunking.first_anchor", "question")).first_anchor == "question"


def test_bad_layers_config_files_and_output_paths(model_dirs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own usage error, exit code 2
        main(["edit", "--question", "Q?", "--answer", "A.", "--layers", "8-4"])
    assert e.value.code == 2 and "--layers '8-4': use a range like 4-8" in capsys.readouterr().err
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _bad(capsys, ["edit", "--question", "Q?", "--answer", "A.", "--out", str(a_file)], "is a file")
    _bad(capsys, ["eval", "--dataset", str(a_file), "--out", str(a_file)], "is a file")
    assert a_file.read_text() == "x"
    cfg = tmp_path / "cfg.json"
    base = ["edit", "--model", str(model_dirs["a"]), "--question", "Q?", "--answer", "The quick fox.", "--no-compare",
            "--config", str(cfg), *_fast(model_dirs, tmp_path)]
    cfg.write_text(json.dumps([1, 2]))
    _bad(capsys, base, "must hold a JSON object")
    cfg.write_text(json.dumps({"chunking": {"windw": 30}}))
    _bad(capsys, base, "unknown config field 'chunking.windw'")
    # a partial section keeps the preset's other fields of that section (deep merge), and --set still wins
    cfg.write_text(json.dumps({"chunking": {"overlap": 1}, "value": {"lr": 0.3}}))
    save = tmp_path / "edit"
    assert main([*base, "--out", str(save), "--set", "value.lr=0.2"]) == 0
    got = json.loads((save / "edit.json").read_text())["config"]
    from transformers import AutoModelForCausalLM

    from anyedit.editing.presets import preset_config

    preset = preset_config(AutoModelForCausalLM.from_pretrained(model_dirs["a"]), "memit").to_dict()
    del got["chunking"]["snap"], preset["chunking"]["snap"]  # snap follows the window (--chunking window:6)
    assert got["chunking"] == {**preset["chunking"], "overlap": 1, "window": 6}
    assert got["value"] == {**preset["value"], "lr": 0.2, "max_steps": 3}
