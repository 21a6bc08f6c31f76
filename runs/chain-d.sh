#!/bin/bash
# issue 19: the assistant's v3 expert × objective table (journaled per model: rerun to resume; the backbones join later)
cd /work/run-d
export MAGE_CHECKPOINTS=/work/main/checkpoints/v3 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
E=/work/main/checkpoints/v3/assistant/experts
echo "== $(date) assistant table (experts)"
/work/main/.venv/bin/python -m mage table --task assistant --split test --samples 2 \
  --adapter expert:helpful=$E/helpful --adapter expert:harmless=$E/harmless --adapter expert:humorous=$E/humorous \
  --out /work/main/checkpoints/v3/results/assistant-ingredients.json > /work/main/runs/assistant-table.log 2>&1 || echo FAILED
echo "== $(date) done"
