#!/bin/bash
# issue 19, core C: the assistant's guided (context-distilled) stage 1 on v3 objectives. Runs from a snapshot worktree;
# each step skips what is finished (pools journal, train-set skips complete folders).
cd /work/run-c
export MAGE_CHECKPOINTS=/work/main/checkpoints/v3-guided MAGE_RESULTS=/work/main/checkpoints/v3-guided/results
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M="/work/main/.venv/bin/python -m mage"
L=/work/main/runs
for step in "pool-stats --task assistant --guide-samples 4 --ship:assistant-guided-pool" \
            "train-set --task assistant --kind experts --guide-samples 4:assistant-guided-experts" \
            "train-set --task assistant --kind backbones --guide-samples 4:assistant-guided-backbones"; do
  args=${step%%:*}; log=${step##*:}
  echo "== $(date) $args"
  $M $args >> $L/$log.log 2>&1 || { echo "FAILED $args"; exit 1; }
done
echo "== $(date) done"
