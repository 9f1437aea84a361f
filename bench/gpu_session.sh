#!/usr/bin/env bash
# One device-machine session (the device tool's `run`; $OUT comes back): train the zoo models that are missing on
# the GPU, then the GPU figures of bench/. Needs .whl (pydantic, timm, torchattacks, ... as cp312 wheels) and
# .devsite (pyautoattack without its example weights; the Fashion-MNIST training IDX files) carried along.
# Each step has its own time limit so a slow one cannot take the others' time.
set -u
. bench/device_env.sh
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc;
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; } | tee "$OUT/machine.txt"
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS on" | tee -a "$OUT/machine.txt"
t0=$(date +%s)
timeout "${TRAIN_LIMIT:-300}" python3 tools/train_zoo.py --out runs/zoo-train --jobs 14 --threads 1 --device cuda \
  2>&1 | tee "$OUT/train.log"
echo "zoo training wall: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.log"
(cd runs/zoo-train && tar czf "$OUT/zoo.tgz" $(ls *.safetensors *.json 2>/dev/null))
echo quit | nvidia-cuda-mps-control 2>/dev/null
{
  echo "## speed_report --device cuda: attention eager/fused (training step, inference), PGD and patch vs bare loop, bf16"
  timeout 420 python3 bench/speed_report.py --device cuda --kinds standard,quest,qnorm,qknorm_hs --skip-default-run
  echo "## reference AutoAttack 2/255 on 500, built-in quest-s0"
  timeout 150 python3 bench/attack_speed.py --device cuda --images 500 --batch 500 --autoattack 500 --rounds 1
  echo "## corruption_speed --engines --device cuda --size 224"
  timeout 90 python3 bench/corruption_speed.py --engines --device cuda --size 224 --images 256
} 2>&1 | tee "$OUT/bench.log"
{
  echo "## paper_imagenet_slice: ViT-S/16 standard/QUEST pair, a slice of paper-imagenet extrapolated (issue 40)"
  timeout 300 python3 bench/paper_imagenet_slice.py --device cuda --images 256 --aa-images 64 --batch 128 --workers 8
} 2>&1 | tee "$OUT/paper_slice.log"
