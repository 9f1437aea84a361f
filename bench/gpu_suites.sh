#!/usr/bin/env bash
# Device session 2: the suites that need a GPU (reference AutoAttack on 500 images costs hours on 2 CPU cores),
# then the ablation suite; each results folder comes back as a tarball. Carries .whl and .devsite as gpu_session.sh.
set -u
. bench/device_env.sh
for spec in "fmnist-autoattack ${AA_LIMIT:-200}" "fmnist-ablation ${ABL_LIMIT:-190}"; do
  set -- $spec
  t0=$(date +%s)
  timeout "$2" python3 -m questbench run "$1" --device cuda --out "runs/$1" -q 2>&1 | tail -3 | tee -a "$OUT/suites.log"
  echo "$1: exit ${PIPESTATUS[0]}, wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/suites.log"
  tar czf "$OUT/$1.tgz" -C runs "$1"
done
