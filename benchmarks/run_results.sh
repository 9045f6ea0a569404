#!/usr/bin/env bash
# Reproduces the figures in docs/results.md (CPU, 2 threads).
# Usage: bash benchmarks/run_results.sh [aasce|isbi|phantom|bench|all|heatmap-loss|architectures]
# (heatmap-loss re-trains the two arms of the BCE vs softmax-NLL comparison: about an hour on 2 cores; not in 'all')
# (architectures: issue 12's table on Test1Data for trained weights, WEIGHTS="label=file ..." (default: the earlier
#  isbi-ceph and the U-Net arm); calibrates each file on the held-out val images first; a bare label reuses its earlier files;
#  not in 'all')
# Needs the datasets beside the repository (../shared/datasets) or DATA=/path/to/datasets.
set -euo pipefail
DATA=${DATA:-../shared/datasets}
OUT=docs/results
IMG=docs/images
mkdir -p "$OUT" "$IMG"
what=${1:-all}
T="--threads 2 --no-progress"

if [[ $what == isbi || $what == all ]]; then
  napari-landmarks evaluate --model isbi-ceph --dataset isbi2015 --root "$DATA/isbi2015" --split Test1Data --clicks 5 \
      --order worst --json $OUT/isbi-ceph-test1-worst.json --plot $IMG/isbi-ceph-mre.png --calibration-plots $IMG $T
  for order in ere random; do
    napari-landmarks evaluate --model isbi-ceph --dataset isbi2015 --root "$DATA/isbi2015" --split Test1Data --clicks 5 \
        --order $order --no-calibration --json $OUT/isbi-ceph-test1-$order.json $T
  done
fi
if [[ $what == aasce || $what == all ]]; then
  napari-landmarks evaluate --model aasce-spine --dataset aasce --root "$DATA/aasce" --split val --clicks 10 \
      --order worst --no-calibration --json $OUT/aasce-spine-val-worst.json --plot $IMG/aasce-spine-mre.png $T
  # calibration metrics and the click orders on the half of val that was not used to fit the temperatures
  napari-landmarks evaluate --model aasce-spine --dataset aasce --root "$DATA/aasce" --split eval --clicks 10 \
      --order worst --json $OUT/aasce-spine-eval-worst.json --calibration-plots $IMG $T
  for order in ere random; do
    napari-landmarks evaluate --model aasce-spine --dataset aasce --root "$DATA/aasce" --split eval --clicks 10 \
        --order $order --no-calibration --json $OUT/aasce-spine-eval-$order.json $T
  done
  python benchmarks/ere_without_label_defects.py $OUT/aasce-spine-eval-worst.json
fi
if [[ $what == phantom || $what == all ]]; then
  napari-landmarks evaluate --model phantom-spine --dataset phantom --split eval --clicks 5 \
      --json $OUT/phantom-spine-eval-worst.json --calibration-plots $IMG $T
fi
if [[ $what == bench || $what == all ]]; then
  for m in aasce-spine isbi-ceph phantom-spine; do
    napari-landmarks bench --model $m --runs 50 --threads 2 --json $OUT/bench-$m.json
  done
  xvfb-run -a python benchmarks/plugin_latency.py --model aasce-spine --runs 40 --threads 2 --json $OUT/plugin-latency-aasce-spine.json
  python benchmarks/cobb_gt_smape.py --root "$DATA" --json $OUT/cobb-gt-smape.json
fi
if [[ $what == heatmap-loss ]]; then
  RUNS=${RUNS:-runs}
  for arm in bce nll; do
    napari-landmarks train --config experiments/configs/experiments/isbi-ceph-ft-$arm.yaml --root "$DATA/isbi2015" \
        --out-dir "$RUNS/isbi-ft-$arm" --no-progress
    napari-landmarks weights register isbi-ceph-ft-$arm --run-dir "$RUNS/isbi-ft-$arm" --description "experiment ($arm)"
    napari-landmarks calibrate --model isbi-ceph-ft-$arm --dataset isbi2015 --root "$DATA/isbi2015" --split val $T
    napari-landmarks evaluate --model isbi-ceph-ft-$arm --dataset isbi2015 --root "$DATA/isbi2015" --split Test1Data \
        --clicks 5 --order worst --json $OUT/isbi-ceph-ft-$arm-test1-worst.json $T
    napari-landmarks evaluate --model isbi-ceph-ft-$arm --dataset isbi2015 --root "$DATA/isbi2015" --split Test1Data \
        --clicks 5 --order ere --no-calibration --json $OUT/isbi-ceph-ft-$arm-test1-ere.json $T
    napari-landmarks weights remove isbi-ceph-ft-$arm --delete-file
  done
fi
if [[ $what == architectures ]]; then
  # WEIGHTS: "label=file" evaluates that file; a bare "label" reuses the files an earlier run wrote for it
  # ($OUT/label-test1-worst.json, $OUT/bench-label-151.json, $OUT/weights-label.json)
  # default: the shipped model against the previous shipped one (24 BCE + 8 softmax-NLL epochs) and the U-Net arm
  WEIGHTS=${WEIGHTS:-"isbi-ceph-v2-bce24-nll8 chh-half-isbi-cpu"}
  # benched on a real film: on a synthetic noise image a stride-1 model's maps are broad and its uncertainty costs more
  FILM="$DATA/isbi2015/RawImage/Test1Data/151.jpg"
  napari-landmarks bench --model isbi-ceph --image "$FILM" --runs 40 --threads 2 --json $OUT/bench-isbi-ceph-151.json
  rows=(--model "HRNet-W18s + OCR, softmax NLL 32 ep. (isbi-ceph)" $OUT/isbi-ceph-test1-worst.json $OUT/bench-isbi-ceph-151.json
        src/napari_interactive_landmarks/weights/isbi-ceph.safetensors)
  for spec in $WEIGHTS; do
    name=${spec%%=*}
    if [[ $spec == *=* ]]; then
      w=${spec#*=}
      napari-landmarks calibrate --weights "$w" --dataset isbi2015 --root "$DATA/isbi2015" --split val $T
      napari-landmarks evaluate --weights "$w" --dataset isbi2015 --root "$DATA/isbi2015" --split Test1Data --clicks 5 \
          --order worst --json $OUT/$name-test1-worst.json $T
      napari-landmarks bench --weights "$w" --image "$FILM" --runs 40 --threads 2 --json $OUT/bench-$name-151.json
      python experiments/benchmarks/architecture_table.py --facts-out "$w" $OUT/weights-$name.json
    fi
    rows+=(--model "$name" $OUT/$name-test1-worst.json $OUT/bench-$name-151.json $OUT/weights-$name.json)
  done
  python experiments/benchmarks/architecture_table.py "${rows[@]}" | tee $OUT/architectures-test1.md
fi
