"""Validates recorded API responses against the OpenAPI document.

Run by tests/tests/contract.rs with: python check_responses.py SPEC RECORDS
RECORDS is a JSON list of {"method", "path", "status", "body"} taken from
real answers of a running gateway. For each, the operation is found by its
path template, the status must be one the operation documents, and a JSON
body must match the documented schema. The schema is read as JSON Schema
with OpenAPI's `nullable` unknown to it, so a `null` where the document
does not allow one fails, as it would in a strictly generated client.
Prints every mismatch and exits 1 when there is any.
"""

import json
import sys

import jsonschema_rs

spec_path, records_path = sys.argv[1:3]
with open(spec_path) as f:
    spec = json.load(f)
with open(records_path) as f:
    records = json.load(f)


def template_of(path):
    """The spec path template matching a concrete path (`{x}` = one segment)."""
    segments = path.split("?")[0].strip("/").split("/")
    for template in spec["paths"]:
        parts = template.strip("/").split("/")
        if len(parts) == len(segments) and all(
            p.startswith("{") or p == s for p, s in zip(parts, segments)
        ):
            return template
    return None


failures = []
checked = set()
for r in records:
    what = f'{r["method"]} {r["path"]} -> {r["status"]}'
    template = template_of(r["path"])
    if template is None:
        failures.append(f"{what}: no operation in the spec has this path")
        continue
    op = spec["paths"][template].get(r["method"].lower())
    if op is None:
        failures.append(f"{what}: the spec has no {r['method']} {template}")
        continue
    response = op["responses"].get(str(r["status"]))
    if response is None:
        failures.append(f"{what}: status not documented for {op['operationId']}")
        continue
    content = response.get("content", {})
    media = next((m for m in content if "json" in m), None)
    if media is None:
        if r["body"] is not None and content == {}:
            failures.append(f"{what}: a body where the spec documents none")
        continue
    schema = dict(content[media]["schema"])
    schema["components"] = spec["components"]
    validator = jsonschema_rs.Draft7Validator(schema)
    for e in validator.iter_errors(r["body"]):
        where = "/".join(str(p) for p in e.instance_path) or "(body)"
        failures.append(f"{what}: at {where}: {e.message}")
    checked.add((op["operationId"], r["status"]))

for f in failures:
    print("MISMATCH", f)
print(f"checked {len(records)} responses of {len(checked)} (operation, status) pairs")
sys.exit(1 if failures else 0)
