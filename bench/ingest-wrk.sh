#!/usr/bin/env bash
# Sustained POST /api/v1/event ingest against `keelson serve` (SQLite store),
# driven by wrk from a separate process on the same machine. Each event is a
# task .finished, so it is stored by the datastore and routed to the shipyard
# function. Prints accepted events/s (wrk) and when the last one was stored.
# Needs wrk (apt-get install wrk). Usage: bench/ingest-wrk.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build -q --profile bench -p keelson
dir=$(mktemp -d)
port=18383
KEELSON_API_TOKEN=bench KEELSON_LOG=warn ./target/release/keelson serve --data-dir "$dir" --port $port >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
api=http://127.0.0.1:$port/api
for _ in $(seq 50); do curl -sf -H 'x-token: bench' $api/v1/metadata >/dev/null && break; sleep 0.1; done
shipyard=$(printf 'apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nspec:\n  stages:\n    - name: dev\n      sequences:\n        - name: d\n          tasks: [{name: t}]\n' | base64 -w0)
curl -sf -H 'x-token: bench' -X POST $api/controlPlane/v1/project -d "{\"name\":\"ing\",\"shipyard\":\"$shipyard\"}" >/dev/null
curl -sf -H 'x-token: bench' -X POST $api/controlPlane/v1/project/ing/service -d '{"serviceName":"svc"}' >/dev/null
lua=$(mktemp)
cat > "$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-token"] = "bench"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"type":"sh.keptn.event.test.finished","source":"wrk","shkeptncontext":"00000000-0000-4000-8000-000000000001","triggeredid":"t-' .. counter .. '","data":{"project":"ing","stage":"dev","service":"svc","result":"pass","status":"succeeded"}}'
  return wrk.format(nil, nil, nil, body)
end
LUA
start=$(date +%s.%N)
out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$lua" $api/v1/event)
echo "$out" | grep -E 'Requests/sec|Latency|requests in|Non-2xx' || true
sent=$(echo "$out" | awk '/requests in/ {print $1}')
while :; do
  n=$(curl -sf -H 'x-token: bench' "$api/mongodb-datastore/event?project=ing&pageSize=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalCount"])')
  [ "$n" -ge "$sent" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
python3 -c "print(f'stored {$sent} events in {$end-$start:.2f} s: {$sent/($end-$start):.0f} events/s stored and routed')"
rm -f "$lua"
