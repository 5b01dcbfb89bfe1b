#!/usr/bin/env bash
# Fashion-MNIST showcase: search cheaply, finalize the small end of the front properly, compare
# with the published table of Debian's dataset-fashion-mnist README.
#
#   bash benchmarks/showcase_fashion_mnist.sh OUT_DIR            # default: about 100 min, 2 cores
#   SCALE=small bash benchmarks/showcase_fashion_mnist.sh OUT_DIR # about 5 min: checks the pipeline
#   PYTHON=/path/to/python SEED=1 bash benchmarks/showcase_fashion_mnist.sh OUT_DIR
#
# Steps (every step's raw output stays under OUT_DIR):
#   1. search (`+sweep=fire`, objectives val_acc and params, params <= 113K checked before
#      training) at reduced fidelity: a training subset and successive halving, within a
#      wall-clock budget (study.timeout);
#   2. finalize every member of that front (all <= 113K parameters by the constraint) from scratch
#      on the full training split (54,000 images; 6,000 held out for validation) with
#      trainer=long (augmentation on), scoring the 10,000 test images once;
#   3. write OUT_DIR/showcase.md, showcase.csv and showcase.png (benchmarks/showcase_report.py).
# Prints the search's and finalize's own output, then the table and where the files are.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: [SCALE=small] [PYTHON=...] [SEED=0] bash $0 OUT_DIR" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
seed="${SEED:-0}"
scale="${SCALE:-default}"
max_params=113000   # the README table's "2 Conv ~113K parameters" entry: the size to beat

case "$scale" in
    default)
        # Budget on the 2-core build machine: ~30 min of search, ~60 min of finalize.
        # Search: 10,000 images, 9 epochs per candidate, rungs at 1 and 3 epochs (eta 3), so
        # most candidates cost one 10k-image epoch (~10 s) and only the promising ones 9.
        subset=10000; search_epochs=9; rungs='[1,3]'; search_seconds=1800; n_trials=1000
        # Finalize: 20 epochs of a one-cycle SGD schedule with augmentation converge for these
        # nets; at 1-2k images/s on two threads a median front member takes ~8-12 min.
        final_epochs=20
        ;;
    small)
        # Checks every step end to end in ~5 minutes; the figures mean nothing at this scale.
        subset=2000; search_epochs=3; rungs='[1]'; search_seconds=60; n_trials=12
        final_epochs=1
        ;;
    *)
        echo "SCALE must be default or small, got '$scale'" >&2
        exit 2
        ;;
esac

storage="sqlite:///$out/optuna.db"
common=(
    data=fashion_mnist "seed=$seed" study.name=showcase "study.storage=$storage"
    "tracking.dir=$out/mlruns" hardware=this_machine "hydra.run.dir=$out/hydra"
)

echo "== search: subset $subset, $search_epochs epochs, rungs $rungs, budget ${search_seconds}s (scale $scale)"
start=$(date +%s)
# One worker on one thread: the fire sweep's setting (tiny nets run slower on more threads).
"$python" -m archsearch +sweep=fire "${common[@]}" \
    "data.subset=$subset" "trainer.epochs=$search_epochs" \
    "study.n_trials=$n_trials" "study.timeout=$search_seconds" \
    '~objectives.macs' "constraints.params.max=$max_params" \
    sweep.fidelity.enabled=true "sweep.fidelity.rungs=$rungs" sweep.fidelity.eta=3 \
    "export.dir=$out/search" 2>&1 | tee "$out/search.log"
searched=$(date +%s)

echo "== finalize: full training split, trainer=long, $final_epochs epochs"
# Two threads: one job at a time now, and the full-split epochs are long enough to use both.
"$python" -m archsearch.finalize "${common[@]}" trainer=long \
    "finalize.epochs=$final_epochs" trainer.threads=2 \
    "export.dir=$out/final" 2>&1 | tee "$out/finalize.log"
finalized=$(date +%s)

echo "== report"
"$python" "$here/showcase_report.py" "$out/optuna.db" --study showcase \
    --published "$here/data/fashion_mnist_published.csv" --out "$out" \
    --note "scale $scale, seed $seed: search $((searched - start)) s (subset $subset, $search_epochs epochs, rungs $rungs), finalize $((finalized - searched)) s ($final_epochs epochs, trainer=long, full training split)"
echo "total $(( $(date +%s) - start )) s; raw results: $out/search/pareto.csv, $out/final/pareto.csv, $out/optuna.db"
