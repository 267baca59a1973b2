"""Structured output with the official openai SDK's parse() helper and a Pydantic model,
through the Flywheel gateway to the real engine.

The helper sends the model's strict JSON schema as response_format, refuses an answer whose
finish_reason is "length" (LengthFinishReasonError) and parses the content into the model.
Reads OPENAI_BASE_URL and OPENAI_API_KEY; the route is "chat". Exits non-zero on the first
failed check and prints ALL OK at the end.
"""
import json
import sys

import openai
import pydantic


class Person(pydantic.BaseModel):
    name: str
    age: int


class BoundedPerson(pydantic.BaseModel):
    """Every answer fits in max_tokens: sampled answers too must stop, not be cut."""

    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=120)


def longest_ws_run_outside_strings(text):
    in_str = escaped = False
    run = longest = 0
    for c in text:
        if in_str:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_str = False
            continue
        if c.isspace():
            run += 1
            longest = max(longest, run)
        else:
            run = 0
            in_str = c == '"'
    return longest


client = openai.OpenAI(max_retries=0)
# Newer SDKs have client.chat.completions.parse; older ones only client.beta.chat.completions.parse.
parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
print("openai", openai.__version__, "pydantic", pydantic.VERSION)

messages = [{"role": "user", "content": "Alice is 31 years old. Give her name and age as JSON."}]
max_tokens = 60
r = parse(model="chat", messages=messages, response_format=Person, temperature=0, max_tokens=max_tokens)
choice = r.choices[0]
print("greedy:", repr(choice.message.content), choice.finish_reason, r.usage)
assert choice.finish_reason == "stop", choice
person = choice.message.parsed
assert isinstance(person, Person), person
assert person == Person(name="Alice", age=31), person
assert choice.message.refusal is None, choice.message
# One-line JSON with OpenAI's separators: exactly what json.dumps writes.
assert choice.message.content == json.dumps(json.loads(choice.message.content)), choice.message.content
assert 0 < r.usage.completion_tokens < max_tokens, r.usage
print("parse ok:", person)

for i in range(3):
    r = parse(model="chat", messages=messages, response_format=BoundedPerson, max_tokens=80)
    choice = r.choices[0]
    content = choice.message.content
    print("sampled:", repr(content), choice.finish_reason)
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, BoundedPerson), choice.message
    assert longest_ws_run_outside_strings(content) <= 1, content
    assert "\n" not in content, content
print("sampled parse ok")
print("ALL OK")
