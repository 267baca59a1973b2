#!/usr/bin/env python3
"""Samples answers for a JSONL dataset from an OpenAI-compatible endpoint
(the engine or the gateway) and writes `{"id", "output_text"}` lines that
`flywheel-tuner grade --samples` reads.

    sample.py --base-url http://127.0.0.1:18090/v1 --model base \
        --dataset heldout.jsonl --out samples.jsonl [--temperature 0] [--constrained]

Standard library only. Requests run N at a time (--concurrency), since the
engine batches concurrent sequences.
"""
import argparse, json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--constrained", action="store_true",
                    help="send the item's response_format (constrained decoding on the engine)")
    ap.add_argument("--api-key", default=None)
    a = ap.parse_args()
    items = [json.loads(l) for l in open(a.dataset) if l.strip()]

    def ask(item):
        body = {"model": a.model, "messages": item["messages"],
                "temperature": a.temperature, "max_tokens": a.max_tokens}
        if a.constrained and "response_format" in item:
            body["response_format"] = item["response_format"]
        req = urllib.request.Request(a.base_url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        if a.api_key:
            req.add_header("authorization", "Bearer " + a.api_key)
        with urllib.request.urlopen(req, timeout=600) as r:
            answer = json.load(r)
        return {"id": item["id"], "output_text": answer["choices"][0]["message"].get("content") or ""}

    with ThreadPoolExecutor(a.concurrency) as pool, open(a.out, "w") as out:
        for row in pool.map(ask, items):
            out.write(json.dumps(row) + "\n")
    print(f"{len(items)} samples -> {a.out}", file=sys.stderr)

if __name__ == "__main__":
    main()
