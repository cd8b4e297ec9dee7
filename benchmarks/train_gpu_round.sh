#!/usr/bin/env bash
# One GPU round (about 8 minutes of an H100) for the projection, restore and diffraction issues,
# every job side by side on the one device:
#   md        microdiffusion continued from the embedded weights with a larger INR prior bank
#             (the bank's INR fits run on the GPU too);
#   care4/dit4     care-axial4 continued, then a dit x4 from scratch refining that new care;
#   careD/ditD     the same for denoising;
#   ditP      the pre-training measurement: the same dit budget as dit4, half of it on the
#             `pretrain` degradation (mixed factors, noise, block masking), half fine-tuning x4;
#   tune_*    the diffraction tuning grid (benchmarks/diffraction_models.py tune), in parts.
# The held-out benchmarks (benchmarks/*_models.py) then decide what ships.
# On 2026-11-27 (H100, MIN=7, BANK=32) the md job did not finish: its bank's 36 INR fits took
# 7 minutes with ten other processes on the GPU and the call's limit killed it before it wrote
# weights. Run it alone, or with BANK=6, or with MIN large enough for the bank plus training.
#
#   bash benchmarks/train_gpu_round.sh OUT_DIR DATA.tif [MINUTES]
# Environment: PY (python3), DEVICE (cuda), BANK (phantoms in the INR prior bank, 32).
set -u
OUT=${1:?output folder}
DATA=${2:?training volume}
MIN=${3:-7}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BANK=${BANK:-32}
mkdir -p "$OUT"
half=$(awk "BEGIN{print $MIN/2}")
quarter=$(awk "BEGIN{print $MIN/4}")
train() { "$PY" -m napari_voxrecon.cli train "$@" --data "$DATA" --device "$DEVICE" --steps 10000000 --threads 1 --overwrite; }
restore=(--batch-size 16 --phantom-workers 2 --phantom-pool 24)

train microdiffusion --init microdiffusion --bank-phantoms "$BANK" --checkpoint-dir "$OUT/ck_md" --p-terminal 0.25 --lr 1e-4 \
  --batch-size 32 --max-minutes "$(awk "BEGIN{print $MIN - 1.5}")" -o "$OUT/md" > "$OUT/md.log" 2>&1 &
(
  train care --init care-axial4 --degradation axial4 "${restore[@]}" --max-minutes "$half" -o "$OUT/care4" > "$OUT/care4.log" 2>&1
  train dit --prior "$OUT/care4" --degradation axial4 --dim 96 --blocks 4 --p-terminal 0.25 "${restore[@]}" \
    --max-minutes "$half" -o "$OUT/dit4" > "$OUT/dit4.log" 2>&1 &
  train dit --prior "$OUT/care4" --degradation pretrain --dim 96 --blocks 4 --p-terminal 0.25 "${restore[@]}" \
    --max-minutes "$quarter" -o "$OUT/ditP_pre" > "$OUT/ditP_pre.log" 2>&1
  train dit --init "$OUT/ditP_pre" --degradation axial4 --p-terminal 0.25 "${restore[@]}" \
    --max-minutes "$quarter" -o "$OUT/ditP" > "$OUT/ditP.log" 2>&1
  wait
) &
(
  train care --init care-denoise --degradation denoise "${restore[@]}" --max-minutes "$half" -o "$OUT/careD" > "$OUT/careD.log" 2>&1
  train dit --prior "$OUT/careD" --degradation denoise --dim 96 --blocks 4 --p-terminal 0.25 "${restore[@]}" \
    --max-minutes "$half" -o "$OUT/ditD" > "$OUT/ditD.log" 2>&1
) &
for i in 0 1 2 3 4 5; do
  timeout "$(awk "BEGIN{print int($MIN * 60)}")" "$PY" benchmarks/diffraction_models.py tune --device "$DEVICE" --threads 1 \
    --part "$i/6" --out "$OUT/tune.jsonl" > "$OUT/tune_$i.log" 2>&1 &
done
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -n 2 "$f"; done
