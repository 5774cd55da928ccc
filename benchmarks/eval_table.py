"""The README's evaluation table: one line per run, the columns that tell the methods apart.

    .venv/bin/python benchmarks/eval_table.py RUN_A,RUN_B [RUN_C,RUN_D ...]

Each argument is a comma-separated group of runs over the same dataset file; as in `anyedit report`, a group is
cut to the records all of its runs have (so a run still going is compared on the same records), and a column
only some rows have says over how many it is the mean. `anyedit report` prints every column.
"""

from __future__ import annotations

import sys

from anyedit.eval.tables import load_runs, table

COLUMNS = [
    ("R-L F1", ("scores", "question", "rougeL_f")),
    ("BLEU", ("scores", "question", "bleu")),
    ("MiniLM sim", ("scores", "question", "similarity")),
    ("tok acc", ("scores", "token_accuracy")),
    ("R-L F1 before", ("scores", "before", "rougeL_f")),
    ("para R-L F1", ("scores", "paraphrase", "rougeL_f")),
    ("para R-L F1 before", ("scores", "paraphrase_before", "rougeL_f")),
    ("sub R-1 rec", ("scores", "sub", "rouge1_r")),
    ("sub R-1 rec before", ("scores", "sub_before", "rouge1_r")),
    ("probe tokens kept", ("locality", "token_agreement")),
    ("probe answers identical", ("locality", "exact")),
    ("probe answers R-L F1", ("locality", "answer_rougeL_f")),
    ("probe NLL change", ("locality", "nll_change")),
    ("edit s", ("timings", "total_s")),
]

if __name__ == "__main__":
    lines = []
    for group in sys.argv[1:]:
        runs, _ = load_runs(group.split(","))
        rows = table(runs, COLUMNS).splitlines()
        lines += rows if not lines else rows[2:]
    print("\n".join(lines))
