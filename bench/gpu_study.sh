#!/usr/bin/env bash
# The study's device session (issue 35): train the zoo models still missing, measure whether the primary attack
# (reference APGD-CE as the suites run it: 100 iterations x 1 restart at 4/255, x 5 at 8/255) has converged on every
# Fashion-MNIST model at 1,000 images (doubling iterations
# and restarts must move robust accuracy by under 0.5 pp), then run fmnist-ablation with the primary endpoints
# (fmnist-seeds' page is a --models selection of its results). Each step has its own time limit and prints as soon as it has a figure; every results folder comes
# back as a tarball. Carries .whl and .devsite as gpu_session.sh does. Untested on a GPU so far (no device lent).
# The ten seeds of fmnist-ablation were finished on the CPU (studies/fmnist-ablation/), so the suite step runs only
# with RUN_STUDY=1; the convergence check on every model is what is left for a device.
set -u
. bench/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
t0=$(date +%s)
timeout "${TRAIN_LIMIT:-120}" python3 tools/train_zoo.py --out runs/zoo-train --seeds 0-9 --jobs 8 --threads 1 \
  --device cuda 2>&1 | tee "$OUT/train.log"
echo "zoo training wall: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.log"
(cd runs/zoo-train && tar czf "$OUT/zoo.tgz" $(ls *.safetensors *.json 2>/dev/null))
t0=$(date +%s)
timeout "${CONV_LIMIT:-150}" python3 bench/attack_convergence.py --models fashion-mnist --samples 1000 \
  --eps 4/255 --restarts 1 --device cuda 2>&1 | tee "$OUT/convergence.log"
timeout "${CONV_LIMIT:-150}" python3 bench/attack_convergence.py --models fashion-mnist --samples 1000 \
  --eps 8/255 --restarts 5 --device cuda 2>&1 | tee -a "$OUT/convergence.log"
echo "convergence wall: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/convergence.log"
if [ "${RUN_STUDY:-0}" = 1 ]; then
  mkdir -p runs/study
  # fmnist-ablation only: fmnist-seeds' 20 models are among its 40, and its page is a selection of the same
  # results (questbench leaderboard --models), so no model runs twice
  t0=$(date +%s)
  timeout "${ABL_LIMIT:-300}" python3 -m questbench run fmnist-ablation --device cuda --out runs/study/fmnist-ablation \
    -q 2>&1 | tail -3 | tee -a "$OUT/suites.log"
  echo "fmnist-ablation: exit ${PIPESTATUS[0]}, wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/suites.log"
  tar czf "$OUT/fmnist-ablation.tgz" -C runs/study fmnist-ablation
fi
