#!/usr/bin/env bash
# Training runs on the lent GPU machine (see docs/gpu-runbook.md). Run from the repository root there, with the
# training packs carried in packs/ (the raw datasets do not travel). The package is used from src/ as it is
# (the machine has torch but no internet: nothing is installed).
#
#   bash scripts/gpu_train.sh check                              can this machine train? (imports, CUDA, packs)
#   bash scripts/gpu_train.sh start CONFIG=PACK [CONFIG=PACK …]  each run in the background (survives the call)
#   bash scripts/gpu_train.sh status                             last metrics row of every run, GPU memory
#   bash scripts/gpu_train.sh collect                            each run's best.safetensors + metrics.csv → $OUT
#
# Runs write to runs/<config name>/ (train.log, metrics.csv, last.ckpt, best.safetensors with its model card).
# GPU_TRAIN_DEVICE=cpu runs the same steps on a CPU (a smoke test of this script).
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
cmd="${1:-status}"; shift || true

case "$cmd" in
  check)
    python3 - <<'PY'
import importlib, torch
for m in ("numpy", "scipy", "skimage", "yaml", "safetensors", "tqdm", "PIL"):
    importlib.import_module(m)
import napari_interactive_landmarks.training.trainer  # noqa: F401  (the trainer imports without pooch/pydicom)
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
    ls -la packs/ 2>/dev/null || echo "no packs/ here: carry it"
    ;;
  start)
    [ "$#" -gt 0 ] || { echo "start CONFIG=PACK …" >&2; exit 2; }
    for spec in "$@"; do
      cfg="${spec%%=*}"; pack="${spec#*=}"
      name="$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$cfg")"
      mkdir -p "runs/$name"
      resume=""; [ -f "runs/$name/last.ckpt" ] && resume="--resume"
      setsid nohup python3 -m napari_interactive_landmarks.cli train --config "$cfg" --pack "$pack" \
        --out-dir "runs/$name" --device "${GPU_TRAIN_DEVICE:-cuda}" --no-progress $resume >> "runs/$name/train.log" 2>&1 < /dev/null &
      echo "started $name (pid $!) ${resume:+(resumed)}"
    done
    ;;
  status)
    for d in runs/*/; do
      [ -f "$d/metrics.csv" ] || continue
      echo "$(basename "$d"): $(tail -n 1 "$d/metrics.csv")"
      tail -n 2 "$d/train.log" 2>/dev/null | sed 's/^/    /'
    done
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader || true
    ;;
  collect)
    : "${OUT:?collect writes to \$OUT}"
    for d in runs/*/; do
      name="$(basename "$d")"
      [ -f "$d/best.safetensors" ] && cp "$d/best.safetensors" "$OUT/$name.safetensors"
      [ -f "$d/metrics.csv" ] && cp "$d/metrics.csv" "$OUT/$name.metrics.csv"
    done
    ls -la "$OUT"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
