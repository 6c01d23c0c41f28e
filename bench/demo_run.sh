#!/usr/bin/env bash
# End-to-end figures: a timed demo (embedded broker) and the gateway's CPU/RSS over it.
# Run from the repository root: bash bench/demo_run.sh [SECONDS] [METERS]
set -euo pipefail
secs="${1:-60}"; meters="${2:-3}"
/usr/bin/time -f '{"max_rss_kb": %M, "cpu_user_s": %U, "cpu_sys_s": %S, "wall_s": %e}' \
  -o /tmp/tanji-bench-time.json \
  .venv/bin/tanji demo --duration "$secs" --meters "$meters" --json > /tmp/tanji-bench-demo.json
python3 - <<'PY'
import json
demo = json.load(open("/tmp/tanji-bench-demo.json"))
res = json.load(open("/tmp/tanji-bench-time.json"))
demo.pop("workdir", None)
print(json.dumps({"demo": demo, "process": res}, indent=2))
PY
