#!/bin/bash
# issue 19, core C (replaces chain-c.sh): the assistant's guided (context-distilled) stage 1 on v3 objectives, measured
# before the backbones are spent. Runs from a snapshot worktree; each step skips what is finished.
cd /work/run-c
while pgrep -f "mage pool-stats --task assistant --guide-samples" > /dev/null; do sleep 30; done
export MAGE_CHECKPOINTS=/work/main/checkpoints/v3-guided MAGE_RESULTS=/work/main/checkpoints/v3-guided/results
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M="/work/main/.venv/bin/python -m mage"
L=/work/main/runs
E=/work/main/checkpoints/v3-guided/assistant/experts
for step in "pool-stats --task assistant --guide-samples 4 --ship:assistant-guided-pool" \
            "train-set --task assistant --kind experts --guide-samples 4:assistant-guided-experts" \
            "table --task assistant --split test --samples 2 --adapter expert:helpful=$E/helpful --adapter expert:harmless=$E/harmless --adapter expert:humorous=$E/humorous --out /work/main/checkpoints/v3-guided/results/assistant-ingredients.json:assistant-guided-table" \
            "train-set --task assistant --kind backbones --guide-samples 4:assistant-guided-backbones"; do
  args=${step%:*}; log=${step##*:}
  echo "== $(date) $args"
  $M $args >> $L/$log.log 2>&1 || { echo "FAILED $args"; exit 1; }
done
echo "== $(date) done"
