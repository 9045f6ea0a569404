#!/usr/bin/env bash
# The long CPU training runs (issue 18): started or continued in the background at the start of every session, at a
# lower priority than foreground work, logged, checkpointed every epoch. Run from the repository root.
#
#   bash scripts/cpu_train.sh start CONFIG [CONFIG …]   continue runs/<name>/last.ckpt, or start from the config's
#                                                        init_weights (the shipped model) with a fresh schedule
#   bash scripts/cpu_train.sh status                     the last metrics rows and log lines of every run
#   bash scripts/cpu_train.sh stop                       stop every run started here (the checkpoint is kept)
#
# The training pack of each config is built once into packs/<name>.pack.npz from ../shared/datasets (or
# $NAPARI_LANDMARKS_DATA_<DATASET>). Each run writes runs/<name>/: train.log, metrics.csv, last.ckpt, and
# best.safetensors (whole model card) whenever validation improves.
set -euo pipefail
cmd="${1:-status}"; shift || true
NICE="${CPU_TRAIN_NICE:-19}"
# the project's environment when the caller has not activated it (a session's first command often has not)
if ! command -v napari-landmarks >/dev/null 2>&1 && [ -x .venv/bin/napari-landmarks ]; then PATH="$PWD/.venv/bin:$PATH"; fi
if [ "$cmd" = start ] && ! command -v napari-landmarks >/dev/null 2>&1; then
  echo "napari-landmarks is not on PATH and there is no .venv here: run bash scripts/setup.sh (or activate your environment)" >&2
  exit 2
fi

root_for() {  # dataset name → raw data folder
  case "$1" in
    aasce) echo "${NAPARI_LANDMARKS_DATA_AASCE:-../shared/datasets/aasce}" ;;
    isbi2015) echo "${NAPARI_LANDMARKS_DATA_ISBI2015:-../shared/datasets/isbi2015}" ;;
    *) echo "" ;;
  esac
}

case "$cmd" in
  start)
    [ "$#" -gt 0 ] || { echo "start CONFIG [CONFIG …]" >&2; exit 2; }
    for cfg in "$@"; do
      read -r name dataset < <(python3 -c "import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); print(c['name'], c['dataset'])" "$cfg")
      run="runs/$name"; pack="packs/$name.pack.npz"
      mkdir -p "$run" packs
      if pgrep -f -- "--out-dir $run( |\$)" >/dev/null; then echo "$name: already running"; continue; fi
      if [ ! -f "$pack" ]; then
        echo "$name: building $pack" | tee -a "$run/train.log"
        nice -n "$NICE" napari-landmarks pack --config "$cfg" --root "$(root_for "$dataset")" --out "$pack" --no-progress \
          >> "$run/train.log" 2>&1
      fi
      resume=""
      if [ -f "$run/last.ckpt" ]; then
        resume="--resume"
        echo "$(date -Is) $name: resuming from $run/last.ckpt" >> "$run/train.log"
      else
        echo "$(date -Is) $name: no checkpoint in $run: starting from the config's init_weights with a fresh schedule" \
          | tee -a "$run/train.log"
      fi
      setsid nohup nice -n "$NICE" napari-landmarks train --config "$cfg" --pack "$pack" --out-dir "$run" \
        --no-progress $resume >> "$run/train.log" 2>&1 < /dev/null &
      pid=$!
      # setsid gives the run a scheduler autogroup of its own, and the kernel shares the CPU between autogroups
      # before it looks at nice: without this the 'nice 19' run took 60 % of the cores from foreground work
      # (only once setsid has run: written earlier, it would lower the priority of the calling shell's autogroup)
      for _ in $(seq 50); do
        [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] && break; sleep 0.1
      done
      if [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] && [ -w "/proc/$pid/autogroup" ]; then
        echo "$NICE" > "/proc/$pid/autogroup" 2>/dev/null || true
      else
        echo "$name: could not lower the run's autogroup priority; it competes with foreground work" >&2
      fi
      echo "$name: started (pid $pid) ${resume:+resumed} → $run/train.log"
    done
    ;;
  status)
    for d in runs/*/; do
      [ -f "$d/metrics.csv" ] || continue
      echo "$(basename "$d"):"; tail -n 3 "$d/metrics.csv" | sed 's/^/    /'
      tail -n 1 "$d/train.log" 2>/dev/null | sed 's/^/    log: /'
    done
    ;;
  stop)
    pkill -f "napari-landmarks train --config" && echo stopped || echo "nothing running"
    ;;
  *) echo "unknown command $cmd (start | status | stop)" >&2; exit 2 ;;
esac
