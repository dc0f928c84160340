#!/usr/bin/env bash
# Train the bundled paper models and fill the demo results store, resumably.
#
#   PYTHON=.venv/bin/python DEVICE=cpu JOBS=2 bash data_samples/make_demo.sh   # about 7 h on a 2-core CPU
#   DEVICE=cuda WORKERS=14 bash data_samples/make_demo.sh                      # minutes on one GPU
#   PRESET=paper RANDOMISE=0 ITERATIONS=12000 bash data_samples/make_demo.sh  # the clean world of earlier releases
#   PRESET=calibrated WORK=runs/demo_calibrated bash data_samples/make_demo.sh  # tumour contrasts as real scans show
#
# Stages (each resumes where a killed run stopped, so the script can simply be run again):
#   1. render the cohort's test cases (scale $SCALE) and, in parallel,
#   2. train the six models with `python -m core zoo` (several at once),
#   3. evaluate, most important first: the public and hospital 1 test cases as acquired, all 8
#      combinations simulated on hospital 1's, then hospitals 2-6 as acquired (first the
#      patients whose label maps are kept, evenly over hospitals, then the rest),
#   4. keep the label maps of $KEEP_PREDICTIONS patients per hospital (metrics of all), so the
#      store stays near 8 MiB.
# Work goes to $WORK (cohort, models in $MODEL_DIR, store $STORE); $DEST, when set, receives a copy
# of the store and a tarball of the models after each stage. $DEADLINE (seconds) stops
# starting stages that would not finish; each stage gets the time left. $STAGES picks stages
# (render-test,zoo,simulated-h1,acquired-public-h1,acquired-h2-6,trim), e.g. training in one
# GPU lease and evaluating the committed models in the next:
#   STAGES=zoo DEVICE=cuda ... bash data_samples/make_demo.sh
#   STAGES=render-test,simulated-h1,acquired-public-h1,acquired-h2-6,trim MODEL_DIR=models DEVICE=cuda ...
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PRESET=${PRESET:-realistic} # cohort preset: realistic (the bundled demo: look-alikes, hospital protocols), calibrated or paper
RANDOMISE=${RANDOMISE:-1}   # domain randomisation strength of training windows (0: off)
DEVICE=${DEVICE:-cpu}
SCALE=${SCALE:-1}
WORK=${WORK:-runs/demo}
WORKERS=${WORKERS:-2}
MODELS=${MODELS:-BraTS,BraTSst,H1BraTS,H1BraTSst,H2-6BraTS,H2-6BraTSst}
ITERATIONS=${ITERATIONS:-4000}
MAX_CASES=${MAX_CASES:-48}
MAX_VAL_CASES=${MAX_VAL_CASES:-6}
TRAIN_MINUTES=${TRAIN_MINUTES:-0}
JOBS=${JOBS:-6}
DEADLINE=${DEADLINE:-0}
DEST=${DEST:-}
KEEP_PREDICTIONS=${KEEP_PREDICTIONS:-4}
MODEL_DIR=${MODEL_DIR:-$WORK/models}
AMP=${AMP:-1} # 1: bfloat16 autocast where the device runs it natively (CUDA; CPUs with AVX-512 BF16/AMX)
STAGES=${STAGES:-render-test,zoo,simulated-h1,acquired-public-h1,acquired-h2-6,trim}
STORE=${STORE:-$WORK/results.sqlite} # an existing store (e.g. data_samples/results.sqlite) is filled where it stopped
amp=()
[ "$AMP" = 1 ] && amp=(--amp)
start=$(date +%s)

log() { echo "[$(($(date +%s) - start)) s] $*" >&2; }
left() { # seconds left before the deadline (a large number without one)
  if [ "$DEADLINE" -gt 0 ]; then echo $((DEADLINE - ($(date +%s) - start))); else echo 999999; fi
}
publish() { # copy the store (checkpointed) and the models to $DEST
  [ -n "$DEST" ] || return 0
  mkdir -p "$DEST"
  if [ -f "$STORE" ]; then
    "$PYTHON" -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()" "$STORE"
    cp "$STORE" "$DEST/results.sqlite"
  fi
  [ -d "$MODEL_DIR" ] && tar -C "$(dirname "$MODEL_DIR")" -cf "$DEST/models.tar" "$(basename "$MODEL_DIR")"
  return 0
}
run_stage() { # name, minimum seconds, command...
  local name=$1 need=$2
  shift 2
  case ",$STAGES," in
    *",$name,"*) ;;
    *) log "skip $name (not in STAGES)"; return 0 ;;
  esac
  local budget
  budget=$(left)
  if [ "$budget" -lt "$need" ]; then
    log "skip $name: ${budget} s left, needs ${need} s"
    return 1
  fi
  log "start $name"
  local t0
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$budget" "$@"
  local rc=$?
  log "end $name: rc $rc, $(($(date +%s) - t0)) s"
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0))}" >>"$WORK/stages.jsonl"
  publish
  return $rc
}

mkdir -p "$WORK"
models=()
IFS=, read -ra names <<<"$MODELS"
for name in "${names[@]}"; do models+=("$MODEL_DIR/$name"); done
model_list=$(IFS=,; echo "${models[*]}")
# Training cases are on the critical path (training waits for them); test cases render beside it.
test_workers=$((WORKERS >= 4 ? WORKERS / 4 : 1))
train_workers=$((WORKERS - test_workers > 0 ? WORKERS - test_workers : 1))

# 1 + 2: test cases render while the zoo renders its training cases and trains.
run_stage render-test 60 "$PYTHON" -m core synth --preset "$PRESET" --scale "$SCALE" --seed 0 --splits test \
  --out "$WORK/test" --workers "$test_workers" >"$WORK/synth.json" &
render_pid=$!
run_stage zoo 120 "$PYTHON" -m core zoo --preset "$PRESET" --scale "$SCALE" --seed 0 --cohort "$WORK/train" \
  --out "$MODEL_DIR" --models "$MODELS" --iterations "$ITERATIONS" --max-cases "$MAX_CASES" \
  --max-val-cases "$MAX_VAL_CASES" --jobs "$JOBS" --max-minutes "$TRAIN_MINUTES" --workers "$train_workers" \
  --device "$DEVICE" --randomise "$RANDOMISE" "${amp[@]}" >"$WORK/zoo.json" || { log "the zoo did not finish"; exit 1; }
wait "$render_pid" || { log "rendering the test cases did not finish"; exit 1; }

# 3. Evaluation, most important first.
evaluate=("$PYTHON" -m core evaluate --models "$model_list" --cohort "$WORK/test/manifest.csv" --store "$STORE"
  --workers "$WORKERS" --device "$DEVICE" "${amp[@]}")
run_stage acquired-public-h1 30 "${evaluate[@]}" --mode acquired --hospitals public,1 >"$WORK/eval_acquired1.json"
run_stage simulated-h1 30 "${evaluate[@]}" --mode simulated --hospitals 1 >"$WORK/eval_simulated.json"
# Hospitals 2-6: first the patients whose label maps are kept, evenly over hospitals, then the rest.
run_stage acquired-h2-6 30 "${evaluate[@]}" --mode acquired --hospitals 2,3,4,5,6 \
  --max-per-hospital "$KEEP_PREDICTIONS" >"$WORK/eval_acquired2_first.json" &&
  run_stage acquired-h2-6 30 "${evaluate[@]}" --mode acquired --hospitals 2,3,4,5,6 >"$WORK/eval_acquired2.json"
run_stage trim 5 "$PYTHON" -m core trim --store "$STORE" --keep-per-hospital "$KEEP_PREDICTIONS" >"$WORK/trim.json"
[ -n "$DEST" ] && tar -C "$WORK" -cf "$DEST/logs.tar" --ignore-failed-read stages.jsonl synth.json zoo.json \
  eval_simulated.json eval_acquired1.json eval_acquired2_first.json eval_acquired2.json trim.json
log "done"
