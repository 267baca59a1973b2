#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on the same GGUF, measured like stream_bench.py.

In-process (no HTTP). llama-cpp-python's high-level API runs one sequence at a time, so
"concurrency N" is N requests served back to back (what its server does too): aggregate
throughput is reported for comparison with mistral.rs's continuous batching.

    llama_bench.py --gguf CACHE/smollm2/model.gguf --threads 2 --concurrency 8
"""
import argparse, json, statistics, time
from llama_cpp import Llama
from stream_bench import SHORT, LONG_PASSAGE


def run(llm, content, max_tokens):
    msgs = [{"role": "user", "content": content}]
    t0 = time.perf_counter()
    t_first = t_last = None
    n = 0
    for ev in llm.create_chat_completion(messages=msgs, temperature=0, top_k=1, max_tokens=max_tokens, stream=True):
        d = ev["choices"][0].get("delta", {})
        if d.get("content"):
            now = time.perf_counter()
            t_first = t_first or now
            t_last = now
            n += 1
    return t0, t_first, t_last, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests-per-stream", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompt", choices=["short", "long"], default="short")
    a = ap.parse_args()
    llm = Llama(model_path=a.gguf, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=2048, verbose=False)
    content = SHORT if a.prompt == "short" else LONG_PASSAGE + "\nSummarize the passage above in three sentences."
    # Prompt length as llama.cpp sees it (chat template from the GGUF).
    prompt_tokens = llm.create_chat_completion(messages=[{"role": "user", "content": content}], max_tokens=1)["usage"]["prompt_tokens"]
    run(llm, content, 4)  # warm-up
    res = []
    t0 = time.perf_counter()
    for i in range(a.concurrency * a.requests_per_stream):
        llm.reset()  # no prompt-prefix reuse between requests (as with distinct clients)
        res.append(run(llm, f"Request {i + 1}.\n" + content, a.max_tokens))
    wall = time.perf_counter() - t0
    ttft = [r[1] - r[0] for r in res]
    decode = [(r[3] - 1) / (r[2] - r[1]) for r in res if r[3] > 1]
    comp = sum(r[3] for r in res)
    print(json.dumps({
        "label": f"llama.cpp {a.threads} threads", "concurrency": a.concurrency, "prompt": a.prompt,
        "requests": len(res), "prompt_tokens": prompt_tokens,
        "completion_tokens_mean": round(comp / len(res), 1),
        "ttft_s_median": round(statistics.median(ttft), 3),
        "prefill_tok_s_median": round(prompt_tokens / statistics.median(ttft), 1),
        "decode_tok_s_per_stream_median": round(statistics.median(decode), 2),
        "aggregate_completion_tok_s": round(comp / wall, 2),
        "note": "requests served one after another (no batching in llama-cpp-python)",
    }))


if __name__ == "__main__":
    main()
