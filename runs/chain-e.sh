#!/bin/bash
# issue 19, core E: the summary task's guided stage 1 (quality hint + the articles' leads, raw rewards), measured before
# the backbones are spent. Runs from a snapshot worktree; each step skips what is finished.
cd /work/run-d
export MAGE_CHECKPOINTS=/work/main/checkpoints/v3-guided MAGE_RESULTS=/work/main/checkpoints/v3-guided/results
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M="/work/main/.venv/bin/python -m mage"
L=/work/main/runs
E=/work/main/checkpoints/v3-guided/summary/experts
G="--guide-samples 4 --normalize none"
for step in "pool-stats --task summary $G --ship:summary-guided-pool" \
            "train-set --task summary --kind experts $G:summary-guided-experts" \
            "table --task summary --split test --samples 2 --adapter expert:faithful=$E/faithful --adapter expert:quality=$E/quality --out /work/main/checkpoints/v3-guided/results/summary-ingredients.json:summary-guided-table" \
            "train-set --task summary --kind backbones $G:summary-guided-backbones"; do
  args=${step%:*}; log=${step##*:}
  echo "== $(date) $args"
  $M $args >> $L/$log.log 2>&1 || { echo "FAILED $args"; exit 1; }
done
echo "== $(date) done"
