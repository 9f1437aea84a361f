#!/usr/bin/env bash
# The study's device session (issue 35): train the zoo models still missing, measure whether the primary attack
# (reference APGD-CE, 100 iterations x 1 restart as the suites run it) has converged on every Fashion-MNIST model at 1,000 images (doubling iterations
# and restarts must move robust accuracy by under 0.5 pp), then run fmnist-ablation and fmnist-seeds with the
# primary endpoints (a results folder holds one configuration, so fmnist-seeds runs its 20 models again in its own
# folder). Each step has its own time limit and prints as soon as it has a figure; every results folder comes
# back as a tarball. Carries .whl and .devsite as gpu_session.sh does. Untested on a GPU so far (no device lent).
set -u
. bench/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
t0=$(date +%s)
timeout "${TRAIN_LIMIT:-120}" python3 tools/train_zoo.py --out runs/zoo-train --seeds 0-9 --jobs 8 --threads 1 \
  --device cuda 2>&1 | tee "$OUT/train.log"
echo "zoo training wall: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.log"
(cd runs/zoo-train && tar czf "$OUT/zoo.tgz" $(ls *.safetensors *.json 2>/dev/null))
t0=$(date +%s)
timeout "${CONV_LIMIT:-300}" python3 bench/attack_convergence.py --models fashion-mnist --samples 1000 \
  --eps 4/255,8/255 --device cuda 2>&1 | tee "$OUT/convergence.log"
echo "convergence wall: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/convergence.log"
mkdir -p runs/study
for spec in "fmnist-ablation ${ABL_LIMIT:-240}" "fmnist-seeds ${SEEDS_LIMIT:-60}"; do
  set -- $spec
  t0=$(date +%s)
  timeout "$2" python3 -m questbench run "$1" --device cuda --out "runs/study/$1" -q 2>&1 | tail -3 \
    | tee -a "$OUT/suites.log"
  echo "$1: exit ${PIPESTATUS[0]}, wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/suites.log"
  tar czf "$OUT/$1.tgz" -C runs/study "$1"
done
