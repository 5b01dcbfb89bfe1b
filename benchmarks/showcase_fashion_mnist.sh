#!/usr/bin/env bash
# Fashion-MNIST showcase: search cheaply, finalize the small end of the front properly, compare
# with the published table of Debian's dataset-fashion-mnist README.
#
#   bash benchmarks/showcase_fashion_mnist.sh OUT_DIR            # default: about 65 min, 2 idle cores
#   SCALE=small bash benchmarks/showcase_fashion_mnist.sh OUT_DIR # about 1 min: checks the pipeline
#   PYTHON=/path/to/python SEED=1 bash benchmarks/showcase_fashion_mnist.sh OUT_DIR
#   SEARCH_EPOCHS=900 FINAL_EPOCHS=25 SUBSET=20000 MAX_MEMBERS=0 bash ... OUT_DIR  # overrides
#
# The finalize time grows with the number of members, which the search decides: the default
# finalizes at most MAX_MEMBERS=4 of them (spread over the front's log-parameter range; 0: all),
# 12 epochs of 54,000 images on two threads each: 2-7 min per member on an idle machine.
# SKIP_SEARCH=1 reruns only the selection, finalize and the report on OUT_DIR's study (members
# already finalized with the same settings are skipped), e.g. after an interrupted finalize.
#
# Steps (every step's raw output stays under OUT_DIR):
#   1. search (`+sweep=fire`, objectives val_acc and params, params <= 113K checked before
#      training) at reduced fidelity: a training subset and successive halving, within a
#      budget of training epochs (study.max_epochs: work done, so load cannot change how much
#      the search sees; study.timeout only guards against a runaway);
#   2. finalize the members of that front (all <= 113K parameters by the constraint; at most
#      MAX_MEMBERS of them, see above) from scratch on the full training split (54,000 images;
#      6,000 held out for validation) with the recipe benchmarks/finalize_recipes.py chose on
#      validation (the plain trainer: no augmentation, label smoothing 0.1; augmentation,
#      erasing, no smoothing and twice the epochs were all inside the noise of it), scoring the
#      10,000 test images once;
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
        # On the idle 2-core build machine: 43 min of search, 20 min of finalize (README, Results).
        # Search: the default sampler (cost_aware), 10,000 images, 6 epochs per candidate with a
        # rung at 2 (eta 3), so most candidates cost two 10k-image epochs (~20 s) and only the
        # promising third 6. The warm-up is cut to 10% (0.6 epochs) so that the rung falls after
        # it: inside a warm-up, accuracy barely ranks networks (FidelitySettings.rungs_in_warmup).
        # 480 epochs of 10,000 images (an earlier, loaded run finished 362 in its 45 wall-clock minutes).
        subset=10000; search_epochs=6; rungs='[2]'; warmup=0.1; budget_epochs=480; n_trials=1000
        # Finalize: 12 epochs of the plain trainer (benchmarks/finalize_recipes.py: a 32.7K net
        # converges to 92.0% test in 812 CPU s); up to 4 members.
        final_epochs=12; final_max_seconds=null; max_members=4
        ;;
    small)
        # Checks every step end to end in about a minute; the figures mean nothing at this scale.
        subset=2000; search_epochs=3; rungs='[1]'; warmup=0.1; budget_epochs=12; n_trials=12
        # A time cap per finalized member (trainer.max_seconds stops cleanly mid-epoch): one
        # full-split epoch alone took minutes per member on the busy 2-core machine.
        final_epochs=1; final_max_seconds=30; max_members=2
        ;;
    *)
        echo "SCALE must be default or small, got '$scale'" >&2
        exit 2
        ;;
esac

# Overrides for a later, tuned run (the scale's values otherwise).
subset="${SUBSET:-$subset}"
budget_epochs="${SEARCH_EPOCHS:-$budget_epochs}"
final_epochs="${FINAL_EPOCHS:-$final_epochs}"
max_members="${MAX_MEMBERS:-$max_members}"

# A wall-clock guard only: the epoch budget ends the search long before it on an idle machine.
guard_seconds=$((budget_epochs * 15))
storage="sqlite:///$out/optuna.db"
common=(
    data=fashion_mnist "seed=$seed" "study.storage=$storage"
    "tracking.dir=$out/mlruns" "hydra.run.dir=$out/hydra"
)

start=$(date +%s)
if [[ "${SKIP_SEARCH:-0}" == 1 ]]; then
    echo "== search: skipped (SKIP_SEARCH=1), using the study in $out"
else
    echo "== search: subset $subset, $search_epochs epochs (warm-up $warmup), rungs $rungs, budget $budget_epochs epochs (scale $scale)"
    # One worker on one thread: the fire sweep's setting (tiny nets run slower on more threads).
    "$python" -m archsearch +sweep=fire "${common[@]}" hardware=this_machine study.name=showcase \
        "data.subset=$subset" "trainer.epochs=$search_epochs" \
        "study.n_trials=$n_trials" "study.max_epochs=$budget_epochs" study.timeout=$guard_seconds "trainer.schedule.warmup=$warmup" \
        '~objectives.macs' "constraints.params.max=$max_params" \
        sweep.fidelity.enabled=true "sweep.fidelity.rungs=$rungs" sweep.fidelity.eta=3 \
        "export.dir=$out/search" 2>&1 | tee "$out/search.log"
fi
searched=$(date +%s)

members=$(($(wc -l < "$out/search/pareto.csv") - 1))
echo "== select: the front has $members members (all <= $max_params params); finalizing at most $max_members (0: all)"
# Finalize retrains a study's whole front: a copy holding the chosen members (spread over the
# log-parameter range) keeps the finalize within the budget whatever size of front the search left.
"$python" "$here/showcase_report.py" "$out/optuna.db" --study showcase \
    --select-into showcase_final --max-members "$max_members"

echo "== finalize: full training split, the plain trainer (benchmarks/finalize_recipes.py), $final_epochs epochs"
# Two threads: one job at a time now, and the full-split epochs are long enough to use both.
"$python" -m archsearch.finalize "${common[@]}" study.name=showcase_final \
    "finalize.epochs=$final_epochs" "trainer.max_seconds=$final_max_seconds" trainer.threads=2 \
    "export.dir=$out/final" 2>&1 | tee "$out/finalize.log"
finalized=$(date +%s)

echo "== report"
"$python" "$here/showcase_report.py" "$out/optuna.db" --study showcase_final \
    --published "$here/data/fashion_mnist_published.csv" --out "$out" \
    --note "scale $scale, seed $seed: search $((searched - start)) s (subset $subset, $search_epochs epochs, rungs $rungs, $budget_epochs epochs in all), finalize $((finalized - searched)) s ($final_epochs epochs, plain trainer, full training split)"
echo "total $(( $(date +%s) - start )) s; raw results: $out/search/pareto.csv, $out/final/pareto.csv, $out/optuna.db"
