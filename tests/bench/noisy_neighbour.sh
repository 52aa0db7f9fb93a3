#!/usr/bin/env bash
# Benchmark (not a test): what a looping custom plugin in one project costs
# another project's ingestion. One server; project B (the bystander, default
# pipeline) under orrery-loadgen, alternately alone and while project A,
# whose pipeline holds a plugin that loops forever on every event, is sent
# events all the time. Prints B's throughput and p99 per run.
#
#   tests/bench/noisy_neighbour.sh [ORRERY_BIN] [LOADGEN_BIN] [LOOPER_WASM] [ROUNDS]
#
# Three conditions, alternated: B alone; B while A sends events its plugin
# keeps (the same neighbour traffic, no loop); B while A sends events its
# plugin loops on. The looping plugin's cost is the difference between the
# last two.
#
# A sends at a fixed rate (RATE, default 1000 requests/s) in both conditions,
# so that the comparison is of the plugin, not of how fast A's requests are
# answered (a suspended plugin answers faster, and an unpaced A would then
# send more).
#
# Defaults: target/release/orrery, target/release/orrery-loadgen, the SDK's
# busy-loop component (loops on events named `loop`), 2 rounds (A/B/A/B).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
bin=${1:-$target/release/orrery}
loadgen=${2:-$target/release/orrery-loadgen}
looper=${3:-$target/wasm32-wasip2/release/busy_loop.wasm}
rounds=${4:-2}
duration=${DURATION:-15}

dir=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" --data-dir "$dir/data" init --json > "$dir/init.json"
admin=$(jq -r .secret_key "$dir/init.json")
pk=$(jq -r .public_key "$dir/init.json")
ORRERY_LOG__FILTER=error "$bin" --data-dir "$dir/data" serve --listen 127.0.0.1:0 > "$dir/serve.out" &
server=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$dir/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^orrery listening on //p' "$dir/serve.out")
api() { curl -sf -X "$1" "$url$2" -H "X-API-Key: $admin" -H 'Content-Type: application/json' ${3:+-d "$3"}; }

printf '{"name": "looper", "code": "%s", "limits": {"wall_time_ms": 100}}' "$(base64 -w0 "$looper")" > "$dir/upload.json"
api POST /api/v1/plugins "@$dir/upload.json" > /dev/null
noisy=$(api POST /api/v1/projects '{"name": "noisy"}')
noisy_id=$(jq -r .project.id <<< "$noisy")
noisy_pk=$(jq -r .public_key.key <<< "$noisy")
api PUT "/api/v1/projects/$noisy_id/pipeline" \
  '{"stages": [{"plugin": "ip_hash"}, {"plugin": "looper", "on_error": "drop", "timeout_ms": 100}]}' > /dev/null

run_b() {
  "$loadgen" --url "$url" --key "$pk" --concurrency 64 --batch 1 --duration "$duration" --warmup 2 --json 2>/dev/null \
    | tail -n 1 | jq -r '"\(.events_per_s | floor) events/s, p99 \(.p99_ms) ms"'
}
echo "server pid $server at $url; bystander: single events, concurrency 64, ${duration} s"
rate=${RATE:-1000}
echo "neighbour: project A, 8 connections sending $rate single events/s (paced: the same load"
echo "whatever the answers) through [ip_hash, looper]; looper keeps \`pageview\` events and"
echo "loops forever on \`loop\` events"
with_neighbour() {
  "$loadgen" --url "$url" --key "$noisy_pk" --event "$1" --concurrency 8 --rate "$rate" --batch 1 \
    --duration $((duration + 4)) --warmup 0 > "$dir/noise.out" 2>&1 &
  noise=$!
  sleep 1
  local b
  b=$(run_b)
  wait $noise || true
  echo "round $round, A sends $1: $b   (A: $(sed -n 's/^throughput: \([0-9]*\) events.*/\1/p' "$dir/noise.out") events/s)"
}
for round in $(seq 1 "$rounds"); do
  echo "round $round, alone:        $(run_b)"
  with_neighbour pageview
  with_neighbour loop
done
faults=$(curl -sf "$url/metrics" | grep '^orrery_plugin_faults_total{plugin="looper"' || true)
echo "looper faults: ${faults//$'\n'/; }"
