#!/usr/bin/env python3
"""Closed-loop streaming benchmark for an OpenAI-compatible server (stdlib only).

N client threads each send `--requests-per-stream` streaming chat requests back to back.
Per request: TTFT (time to the first content chunk), prompt/completion tokens (from the
final usage chunk), decode rate = (completion_tokens - 1) / (t_last - t_first).
Prefill rate = prompt_tokens / TTFT (includes HTTP + scheduling overhead, so it is a lower
bound). Aggregate = all completion tokens / wall time of the measured phase.

    stream_bench.py --url http://127.0.0.1:PORT --model base --concurrency 8 --max-tokens 48
"""
import argparse, http.client, json, os, statistics, sys, threading, time
from urllib.parse import urlparse

SHORT = "Write a short story about a robot who learns to paint. Use at least five sentences."
LONG_PASSAGE = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based inks and a wooden press adapted from those used for "
    "wine and olive oil. Before that, books were copied by hand, mostly in monasteries, and a "
    "single Bible could take a scribe more than a year. The new process cut the cost of books "
    "dramatically, and within fifty years presses operated in more than two hundred European "
    "cities. Literacy spread, scientific results could be shared in identical copies, and the "
    "Reformation used pamphlets to reach ordinary people. Printers standardised spelling and "
    "grammar, newspapers appeared in the seventeenth century, and the industrial revolution "
    "brought steam-powered presses that printed thousands of sheets per hour. "
) * 3


_counter = [0]
_counter_lock = threading.Lock()


def unique(body):
    """A distinct first line per request, so no two prompts share more than the template."""
    with _counter_lock:
        _counter[0] += 1
        n = _counter[0]
    b = json.loads(json.dumps(body))
    b["messages"][-1]["content"] = f"Request {n}.\n" + b["messages"][-1]["content"]
    return b, n


def one_request(url, body, timeout):
    body, n = unique(body)
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    t_first = t_last = None
    usage = None
    chunks = 0
    text, finish = [], None
    done = False
    buf = b""
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            done = True
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices", []):
            finish = ch.get("finish_reason") or finish
            text.append((ch.get("delta") or {}).get("content") or "")
            if (ch.get("delta") or {}).get("content"):
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                t_last = now
                chunks += 1
    conn.close()
    t_end = time.perf_counter()
    if not done:
        raise RuntimeError("stream did not end with [DONE]")
    return dict(t0=t0, t_first=t_first, t_last=t_last, t_end=t_end, usage=usage, chunks=chunks,
                n=n, text="".join(text), finish_reason=finish)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="base")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests-per-stream", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompt", choices=["short", "long"], default="short")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    content = SHORT if a.prompt == "short" else LONG_PASSAGE + "\nSummarize the passage above in three sentences."
    body = {"model": a.model, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": a.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    for _ in range(a.warmup):
        one_request(a.url, body, a.timeout)
    results, errors = [], []
    lock = threading.Lock()

    def worker():
        for _ in range(a.requests_per_stream):
            try:
                r = one_request(a.url, body, a.timeout)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["usage"] and r["t_first"]]
    comp = sum(r["usage"]["completion_tokens"] for r in ok)
    prompt_toks = statistics.mean(r["usage"]["prompt_tokens"] for r in ok) if ok else 0
    ttft = [r["t_first"] - r["t0"] for r in ok]
    decode = [(r["usage"]["completion_tokens"] - 1) / (r["t_last"] - r["t_first"])
              for r in ok if r["t_last"] > r["t_first"] and r["usage"]["completion_tokens"] > 1]
    out = {
        "label": a.label, "concurrency": a.concurrency, "prompt": a.prompt,
        "requests": len(ok), "errors": len(errors), "error_sample": errors[:2],
        "prompt_tokens": round(prompt_toks, 1),
        "completion_tokens_mean": round(comp / len(ok), 1) if ok else 0,
        "ttft_s_median": round(statistics.median(ttft), 3) if ttft else None,
        "prefill_tok_s_median": round(statistics.median([prompt_toks / t for t in ttft]), 1) if ttft else None,
        "decode_tok_s_per_stream_median": round(statistics.median(decode), 2) if decode else None,
        "aggregate_completion_tok_s": round(comp / wall, 2),
        "wall_s": round(wall, 2),
    }
    if ok and "avg_prompt_tok_per_sec" in (ok[0]["usage"] or {}):
        out["engine_reported_prompt_tok_s_median"] = round(statistics.median(r["usage"]["avg_prompt_tok_per_sec"] for r in ok), 1)
        out["engine_reported_compl_tok_s_median"] = round(statistics.median(r["usage"]["avg_compl_tok_per_sec"] for r in ok), 2)
    print(json.dumps(out))
    # Each answer, for checking what a run's numbers are made of.
    if os.environ.get("STREAM_BENCH_LOG"):
        with open(os.environ["STREAM_BENCH_LOG"], "a") as f:
            for r in sorted(ok, key=lambda r: r["n"]):
                f.write(json.dumps({"label": a.label, "prompt": a.prompt, "concurrency": a.concurrency,
                                    "n": r["n"], "completion_tokens": r["usage"]["completion_tokens"],
                                    "finish_reason": r["finish_reason"], "text": r["text"]}) + "\n")


if __name__ == "__main__":
    main()
