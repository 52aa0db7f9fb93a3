"""Example Python plugin: redacts e-mail addresses.

Replaces every e-mail address found in the string values of `properties`
(at any depth, inside lists too) and in `url` and `referrer` (including the
percent-encoded form `a%40b.com` of query strings) with "[redacted]".

Config (optional): {"replacement": "<text>"} to use another replacement.
Unknown keys are refused.

The gateway calls `configure(config)` once (if defined) with the stage's
config as a dict, then `process(event)` for each event: return the event
dict (changed or not) to keep it, or None to drop it. Only `re`, `json`,
`hashlib`, `math` and `datetime` may be imported; this file needs `re`.
"""

import re

# local part, "@" (or its encoded form %40), domain with a TLD of 2+ letters
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

SETTINGS = {"replacement": "[redacted]"}


def configure(config):
    unknown = sorted(key for key in config if key != "replacement")
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)} (expected: replacement)")
    replacement = config.get("replacement", "[redacted]")
    if not isinstance(replacement, str):
        raise ValueError("`replacement` must be a string")
    SETTINGS["replacement"] = replacement


def redact(value):
    """A copy of `value` with every address in its strings replaced."""
    if isinstance(value, str):
        return EMAIL.sub(lambda found: SETTINGS["replacement"], value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def process(event):
    event["properties"] = redact(event["properties"])
    for field in ("url", "referrer"):
        if event.get(field):
            event[field] = redact(event[field])
    return event
