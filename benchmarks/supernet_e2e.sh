#!/usr/bin/env bash
# benchmarks/supernet_e2e.py end to end for one seed: the two searches side by side (one core
# each, equal process CPU seconds), then both finalizes side by side, then the report.
#
#   bash benchmarks/supernet_e2e.sh [SEED] [OUT_DIR]    # about 90 min on an idle 2-core machine
#   CPU_BUDGET=3600 MEMBERS=3 FINAL_EPOCHS=12 bash benchmarks/supernet_e2e.sh 0
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(dirname "$here")/.venv/bin/python}"
seed="${1:-0}"
out="${2:-$here/results/supernet_e2e}"
mkdir -p "$out"
common=(--seed "$seed" --out "$out")
search=(--cpu-budget "${CPU_BUDGET:-3600}")
final=(--members "${MEMBERS:-3}" --final-epochs "${FINAL_EPOCHS:-12}")
echo "start $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for m in supernet gp_halving; do
    "$python" "$here/supernet_e2e.py" --method "$m" --phase search "${common[@]}" "${search[@]}" \
        > "$out/search_${m}_s$seed.log" 2>&1 &
done
wait
echo "searched $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for m in supernet gp_halving; do
    "$python" "$here/supernet_e2e.py" --method "$m" --phase finalize "${common[@]}" "${final[@]}" \
        > "$out/finalize_${m}_s$seed.log" 2>&1 &
done
wait
echo "finalized $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" "$here/supernet_e2e.py" --report --out "$out" | tee "$out/report_s$seed.txt"
