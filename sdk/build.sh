#!/usr/bin/env bash
# Builds every plugin component of the SDK workspace (examples and test
# plugins) for wasm32-wasip2 and copies them, named by crate
# (`pii-redact.wasm`...), into OUT_DIR (default: sdk/dist/).
#
#   sdk/build.sh [OUT_DIR]
#
# Honours CARGO_TARGET_DIR (default: sdk/target). Needs the wasm32-wasip2
# target: `rustup target add wasm32-wasip2`.
set -euo pipefail

sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$sdk/dist}"
target_dir="${CARGO_TARGET_DIR:-$sdk/target}"

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "build.sh: the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2" >&2
    exit 1
fi

CARGO_TARGET_DIR="$target_dir" cargo build --release --target wasm32-wasip2 \
    --manifest-path "$sdk/Cargo.toml" --workspace --exclude orrery-plugin

mkdir -p "$out"
count=0
for manifest in "$sdk"/examples/*/Cargo.toml "$sdk"/test-plugins/*/Cargo.toml; do
    name="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1)"
    wasm="$target_dir/wasm32-wasip2/release/${name//-/_}.wasm"
    if [[ ! -f "$wasm" ]]; then
        echo "build.sh: $name: no $wasm" >&2
        exit 1
    fi
    # A component starts with \0asm, version 0x0d, layer 1 (a core module
    # has layer 0): refuse to ship a core module.
    magic="$(head -c 8 "$wasm" | od -An -tx1 | tr -d ' \n')"
    if [[ "$magic" != "0061736d0d000100" ]]; then
        echo "build.sh: $name: $wasm is not a component (header $magic)" >&2
        exit 1
    fi
    cp "$wasm" "$out/$name.wasm"
    printf '%-20s %8d bytes\n' "$name.wasm" "$(wc -c <"$wasm")"
    count=$((count + 1))
done
echo "build.sh: $count components in $out"
