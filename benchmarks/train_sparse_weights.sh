#!/usr/bin/env bash
# Train the `sparse` models that ship inside the package: sparse3diff and its deterministic
# baseline unet, with the same data, loop and budget, side by side on one machine.
#
#   bash benchmarks/train_sparse_weights.sh OUT_DIR MINUTES [DATA.tif ...]
#
# Four runs share the device for MINUTES each: both models at the shipped width (16,32,64),
# continued from the embedded weights, and both at a wider (24,48,96) from scratch. The
# held-out benchmark (benchmarks/sparse_models.py) then decides which pair ships.
# Environment: PY (python), DEVICE (cuda), BATCH (64), WORKERS (phantom processes per run).
set -u
OUT=${1:?output folder}
MIN=${2:-7}
shift 2 || true
DATA=("$@")
[ ${#DATA[@]} -eq 0 ] && DATA=(../shared/data/cells3d_nuclei.tif)
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-64}
WORKERS=${WORKERS:-3}
mkdir -p "$OUT"
common=(--data "${DATA[@]}" --device "$DEVICE" --batch-size "$BATCH" --max-minutes "$MIN" --steps 10000000
        --phantom-pool 48 --phantom-workers "$WORKERS" --threads 1 --overwrite)
run() {  # name, model, extra args...
  local name=$1 model=$2
  shift 2
  "$PY" -m napari_voxrecon.cli train "$model" "${common[@]}" -o "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 &
}
run s3d_small sparse3diff --init default --lr 2e-4
run unet_small unet --init default --lr 2e-4
run s3d_wide sparse3diff --channels 24 48 96 --lr 5e-4
run unet_wide unet --channels 24 48 96 --lr 5e-4
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -n 3 "$f"; done
