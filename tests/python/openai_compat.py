"""The official openai SDK against the Flywheel gateway, unchanged.

Reads OPENAI_BASE_URL and OPENAI_API_KEY like any OpenAI client. Exits
non-zero on the first failed check. With FLYWHEEL_CA_FILE (an https base
URL), the client trusts that CA, and first checks that a client which does
not trust it refuses the gateway's certificate.
"""
import json
import os
import ssl

import openai
import pydantic

ca = os.environ.get("FLYWHEEL_CA_FILE")
if ca:
    assert os.environ["OPENAI_BASE_URL"].startswith("https://")
    try:
        openai.OpenAI(max_retries=0).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        raise SystemExit("a certificate from an untrusted CA was accepted")
    except openai.APIConnectionError as e:
        print("untrusted certificate refused:", repr(e.__cause__))
    client = openai.OpenAI(
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)),
    )
else:
    client = openai.OpenAI(max_retries=0)

# Plain chat.
r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content, r
assert r.usage and r.usage.completion_tokens > 0, r.usage
print("chat ok:", r.id)

# Streaming with usage.
chunks = list(
    client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "stream"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text, chunks
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]
print("stream ok:", len(chunks), "chunks")

# Structured output with json_schema.
schema = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model="chat",
    messages=[{"role": "user", "content": "Alice is 31."}],
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
)
person = json.loads(r.choices[0].message.content)
assert person == {"name": "Alice", "age": 31}, person
print("json_schema ok:", person)

# The structured-output helper: a Pydantic model in, the parsed object out (newer SDKs
# have client.chat.completions.parse, older ones client.beta.chat.completions.parse).
class Person(pydantic.BaseModel):
    name: str
    age: int


parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
r = parse(model="chat", messages=[{"role": "user", "content": "Alice is 31."}], response_format=Person)
assert r.choices[0].finish_reason == "stop", r
assert r.choices[0].message.parsed == Person(name="Alice", age=31), r.choices[0].message
print("parse ok:", r.choices[0].message.parsed)

# Errors surface as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.status_code == 404
print("errors ok")
print("ALL OK")
