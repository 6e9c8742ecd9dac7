#!/bin/bash
# The reference's own spread across CPU configurations: kdiffusion_golden.py rerun under every combination of torch's
# thread count and the kernel dispatch of another x86 CPU (ATen's vector ISA, oneDNN's ISA, OpenBLAS's core type),
# each run's largest relative distance per case filed in the fixture's manifest as meta.kdiffusion.config_spread.
# The fixture's own configuration (1 thread, native dispatch) must reproduce it bit for bit first.
# Usage: tools/golden/kdiffusion_config_spread.sh K D G GOLDEN FIXTURE OUT
#   K, D, G: k-diffusion, diffusers and glide-text2im checkouts; GOLDEN: the shared golden set; FIXTURE: the
#   repository's test/fixtures/golden-kdiffusion; OUT: a scratch folder (one run per configuration, about 10 s each).
set -euo pipefail
[ $# -eq 6 ] || { sed -n 6,8p "$0" >&2; exit 2; }
K=$1 D=$2 G=$3 GOLDEN=$4 FIXTURE=$5 OUT=$6
PY=${PYTHON:-/usr/bin/python3}
GEN="$(dirname "$0")/kdiffusion_golden.py"
REFS=(--kdiffusion "$K" --diffusers "$D" --glide "$G" --golden "$GOLDEN")
mkdir -p "$OUT"
for th in 1 2; do for aten in native default; do for dnnl in native SSE41; do for ob in native Sandybridge Prescott; do
  label="threads=$th aten=$aten dnnl=$dnnl openblas=$ob"
  dir="$OUT/t$th-a$aten-d$dnnl-o$ob"
  envs=()
  [ "$aten" != native ] && envs+=(ATEN_CPU_CAPABILITY=$aten)
  [ "$dnnl" != native ] && envs+=(DNNL_MAX_CPU_ISA=$dnnl)
  [ "$ob" != native ] && envs+=(OPENBLAS_CORETYPE=$ob)
  [ -f "$dir/manifest.json" ] || env "${envs[@]}" "$PY" "$GEN" "${REFS[@]}" --threads $th --out "$dir"
  if [ "$label" = "threads=1 aten=native dnnl=native openblas=native" ]; then
    # the fixture's own configuration: every case must come back identical, or the spreads measure another machine
    "$PY" - "$dir" "$FIXTURE" <<'PYEOF'
import glob, os, sys
import numpy as np
a, b = sys.argv[1:]
bad = [os.path.basename(f) for f in sorted(glob.glob(os.path.join(b, "kdiffusion", "*.npy")))
       if os.path.exists(os.path.join(a, "kdiffusion", os.path.basename(f)))
       and not np.array_equal(np.load(f), np.load(os.path.join(a, "kdiffusion", os.path.basename(f))))]
if bad:
    sys.exit(f"{a}: the fixture's own configuration does not reproduce it ({', '.join(bad)}): not this machine's fixture")
print("fixture reproduced bit for bit")
PYEOF
  else
    "$PY" "$GEN" "${REFS[@]}" --spread-only --spread-kind config --config-label "$label" --out "$dir" --compare "$FIXTURE"
  fi
done; done; done; done
