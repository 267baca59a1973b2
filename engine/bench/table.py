#!/usr/bin/env python3
"""Reads the JSON lines of engine-bench.sh on stdin; prints a Markdown table of decode
speed per configuration (median over rounds) with its ratio to llama.cpp measured in the
same run, then each configuration's greedy answers next to the first configuration's."""
import json, statistics, sys
from collections import defaultdict

rows, answers = defaultdict(list), {}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "answers" in r:
        answers.setdefault(r["label"], r["answers"])
    elif r.get("requests"):
        rows[(r["label"], r["prompt"], r["concurrency"])].append(r)


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    # Rounded: the median of an even count is a mean, with float noise in its digits.
    return round(statistics.median(vals), 3) if vals else None


llama = {(p, c): med(rs, "aggregate_completion_tok_s")
         for (label, p, c), rs in rows.items() if label.startswith("llama.cpp")}
llama_1 = {p: med(rs, "decode_tok_s_per_stream_median")
           for (label, p, c), rs in rows.items() if label.startswith("llama.cpp") and c == 1}
print("| engine | prompt (tokens) | streams | rounds | TTFT median s | decode tok/s per stream | aggregate tok/s | aggregate ÷ llama.cpp |")
print("|---|---|---|---|---|---|---|---|")
for (label, p, c), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    agg = med(rs, "aggregate_completion_tok_s")
    ref = llama.get((p, c))
    ratio = f"{agg / ref:.2f}" if ref and agg else "–"
    print(f"| {label} | {p} ({rs[0]['prompt_tokens']}) | {c} | {len(rs)} | {med(rs, 'ttft_s_median')} | "
          f"{med(rs, 'decode_tok_s_per_stream_median')} | {agg} | {ratio} |")
if answers:
    first = next(iter(answers))
    print(f"\nGreedy answers (same as `{first}`: =):\n")
    for label, ans in answers.items():
        shown = ["=" if label != first and a == answers[first][i] else json.dumps(a[:70]) for i, a in enumerate(ans)]
        print(f"- {label}: " + " · ".join(shown))
