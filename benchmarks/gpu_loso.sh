#!/usr/bin/env bash
# Leave-one-subject-out quality on one GPU (benchmarks/README.md, "Quality on one GPU").
#
# Every (held-out case, variant) trains in its own process and all of them run at once, each for
# the same wall-clock budget (the learning rate decays over that budget), so the 2D baseline, the
# 3D model and the anatomy ablation get the same share of the one GPU. One more process trains
# the model on all subjects through the LightningCLI (`python -m monai_t1t2 train fit`) and
# exports its generator as a bundle's models/model.pt.
#
#   bash benchmarks/gpu_loso.sh OUTPUT_DIR [SECONDS] [DATA_DIR]
#   CONFIG=configs/default.yaml VARIANTS="3d 2d 3d_anatomy" CASES="TCGA-DU-7294" TRAIN_ALL=0 bash benchmarks/gpu_loso.sh ...
#   EXTRA=prepared_ixi VARIANTS="3d 3d+extra" ...   # '+extra' variants also train on EXTRA's subjects
set -uo pipefail
output=${1:?usage: gpu_loso.sh OUTPUT_DIR [SECONDS] [DATA_DIR]}
budget=${2:-300}
data=${3:-../shared/data/paired}
config=${CONFIG:-configs/default.yaml}
variants=${VARIANTS:-"3d 2d 3d_anatomy"}
cases=${CASES:-$(cd "$data" && ls -d */ | tr -d /)}
mkdir -p "$output"
python=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONUNBUFFERED=1
limit=$((budget + 240))   # start-up, prediction and scoring on top of the training budget
max_time=$(printf "00:%02d:%02d:%02d" $((budget / 3600)) $((budget % 3600 / 60)) $((budget % 60)))  # DD:HH:MM:SS

for case in $cases; do
  for variant in $variants; do
    floor=$([ "$variant" = 3d ] && echo inverted_t1)
    timeout "$limit" "$python" benchmarks/quality.py --config "$config" --data-dir "$data" --max-time "$budget" \
      --cases "$case" --variants $floor "$variant" ${EXTRA:+--extra-data-dir "$EXTRA"} --output "$output/${case}_$variant" \
      > "$output/${case}_$variant.log" 2>&1 &
  done
done
[ "${TRAIN_ALL:-1}" = 1 ] && timeout "$limit" "$python" -m monai_t1t2 train fit --config "$config" --data.data_dir "$data" --data.val_fraction 0 \
  --trainer.max_steps -1 --trainer.max_time "$max_time" --trainer.enable_progress_bar false \
  --trainer.default_root_dir "$output/all_subjects" > "$output/all_subjects.log" 2>&1 &
wait

checkpoint=$(ls -t "$output"/all_subjects/*/*/checkpoints/last.ckpt 2>/dev/null | head -1)
if [ -n "$checkpoint" ]; then
  "$python" -c "import sys; from monai_t1t2.module import export_generator; print(export_generator(sys.argv[1], sys.argv[2]))" \
    "$checkpoint" "$output/model.pt"
fi
"$python" benchmarks/quality.py --report "$output"/*/quality.json | tee "$output/report.md"
grep -h "steps training" "$output"/*.log
