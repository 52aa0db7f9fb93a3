#!/usr/bin/env bash
# Vendors uap-core's regex database for the `user_agent` plugin.
#
#   plugins/data/update-uap.sh [VERSION]     (default: the version below)
#
# Downloads the uap-core package from the npm registry, copies its
# regexes.yaml and LICENSE here, and converts the YAML to JSON once, so the
# plugin embeds JSON and needs no YAML parser at run time. Needs npm and
# python3 with PyYAML (Debian: python3-yaml). After running it, update the
# version in README.md and `UAP_CORE_VERSION` in plugins/src/user_agent.rs
# (a test checks that the constant matches the JSON), then run
# `cargo test -p orrery-plugins`.
set -euo pipefail

version="${1:-0.18.0}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uap-core@${version}" >/dev/null && tar xzf uap-core-*.tgz)
cp "$tmp/package/regexes.yaml" "$here/uap-regexes.yaml"
cp "$tmp/package/LICENSE" "$here/LICENSE.uap-core"

python3 - "$here/uap-regexes.yaml" "$here/uap-regexes.json" "$version" <<'PY'
import json
import sys

import yaml

src, dst, version = sys.argv[1:]
with open(src, encoding="utf-8") as f:
    data = yaml.safe_load(f)
sections = ("user_agent_parsers", "os_parsers", "device_parsers")
out = {"uap_core_version": version}
for section in sections:
    parsers = data[section]
    for p in parsers:
        for key, value in p.items():
            # The Rust side reads every field as a string (or null): fail
            # here, not at run time, if upstream ever writes a bare number.
            if value is not None and not isinstance(value, str):
                sys.exit(f"{section}: {key} = {value!r} is not a string")
    out[section] = parsers
with open(dst, "w", encoding="utf-8") as f:
    # One parser per line: readable diffs, a third smaller than indented.
    f.write("{\n")
    f.write(f'"uap_core_version": {json.dumps(version)},\n')
    for i, section in enumerate(sections):
        f.write(f'"{section}": [\n')
        lines = [json.dumps(p, ensure_ascii=False) for p in out[section]]
        f.write(",\n".join(lines))
        f.write("\n]" + (",\n" if i < len(sections) - 1 else "\n"))
    f.write("}\n")
counts = ", ".join(f"{len(out[s])} {s}" for s in sections)
print(f"uap-core {version}: {counts}")
PY
