#!/usr/bin/env python3
"""Greedy answers of a server to fixed prompts, so a faster configuration is also checked
for being right (stdlib only). Prints one JSON line: {"label", "answers": [...]}.

    answers.py --url http://127.0.0.1:PORT --model base --label "q8_0"
"""
import argparse, http.client, json
from urllib.parse import urlparse

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Extract the name and age as JSON with keys name and age: 'Alice is 31 years old.'",
    "List three primary colors, separated by commas.",
]


def ask(url, model, content):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": 40}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        return f"HTTP {resp.status}: {data}"
    return data["choices"][0]["message"]["content"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="base")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    print(json.dumps({"label": a.label, "answers": [ask(a.url, a.model, p) for p in PROMPTS]}))


if __name__ == "__main__":
    main()
