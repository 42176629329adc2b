#!/usr/bin/env bash
# The GPU check: one command for a machine with an NVIDIA GPU, PyTorch and onnxruntime, but neither Ray nor MLflow
# and no network. It runs what avasr has otherwise only run on CPUs and prints the figures that docs/benchmarks.md's
# "GPU (pending)" section waits for. Every step has its own time limit inside one overall budget (TOTAL_S, 570 s),
# so everything it prints fits a 10-minute run; a step that fails is reported and the next one still runs.
#
#   1. unpack         .devbundle/site312.tar.xz onto PYTHONPATH (Ray, MLflow, jiwer, soundfile for Python 3.12)
#                     and .devbundle/corpus.tar.xz (a subset of the built-in corpus); versions, GPU
#   2. pytest         the CUDA cases of tests/test_device.py and tests/test_precision.py
#   3. train-step     benchmarks/train_step.py on CUDA: the original-size model, batch 16 x 3 s, every fusion in
#                     fp32 and bf16 autocast (step ms, utterances/s, peak GPU memory)
#   4. prepare        the corpus subset's feature cache and the MLflow store, once, so that neither sweep pays them
#   5. sweep-1gpu     the four fusions (the smoke recipe in EPOCHS epochs, one seed) at one GPU per trial
#   6. sweep-quarter  the same four trials at 0.25 GPU per trial: four share the GPU
#   7. transcribe     experiments/transcribe.py --device cuda on the champion's checkpoint, then --device cpu
#   then a summary: each step's wall time, both sweeps' wall times, their trials' span (Tune's first start to last
#   report), the ratios (the goal: >= 2.5x sooner at 0.25 GPU), GPU memory and utilisation during each sweep.
#
#   scripts/device_check.sh              the check; full logs in $OUT/device_check/ ($OUT: the folder the device
#                                        tool brings back), else in $DEVICE_CHECK_DIR/logs
#   scripts/device_check.sh --dry-run    print the steps and their commands; run nothing
#   scripts/device_check.sh --pack [CORPUS]   on the dev machine: write .devbundle/corpus.tar.xz from CORPUS
#                                        (default data/corpus/medium): the first PACK_TRAIN (96), PACK_VAL (24)
#                                        and PACK_TEST (16) lines of its manifests and their media
#
# device_bundle_readme: building what travels, on the dev machine (network needed once, for the wheels)
#   make setup && python experiments/make_corpus.py --size medium   # .venv and data/corpus/medium, if missing
#   ../shared/tools/device_bundle.sh           # .devbundle/site312.tar.xz: Ray, MLflow, jiwer, soundfile (~38 MB)
#   scripts/device_check.sh --pack             # .devbundle/corpus.tar.xz: 136 utterances (~12 MB)
#   echo /.devbundle/ >> .git/info/exclude     # never committed; it travels because the call names it
#   du -ch .devbundle/* | tail -1              # with the working tree (~3 MB), under the 64 MiB that travel
# Then the device call (the `run` tool), with a limit that leaves room for a second try of the 15 minutes lent:
#   run(command="bash scripts/device_check.sh", carry=[".devbundle"], timeout_s=600)
#
# Why the corpus travels instead of being built there: the corpus builder's voices are espeak-ng, festival and flite,
# system programs the GPU image does not have and cannot install without network. Media, not a feature cache: the
# manifests name media files, the cache is found through them (by their content, or their size and modification
# time) and transcribe.py reads the media themselves, so the media travel in any case; the cache is made there once
# (step 4). Without a packed corpus the check builds the smoke corpus (make_corpus.py --size smoke) where those
# programs are installed, and stops with this explanation where they are not.
set -uo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${DEVBUNDLE:-.devbundle}
PY=${PYTHON:-python3}
WORK=$(realpath -m "${DEVICE_CHECK_DIR:-/tmp/avasr-device-check}")  # absolute: Tune reads its folder as a URI
TOTAL_S=${TOTAL_S:-570}
EPOCHS=${EPOCHS:-3}
CPUS_PER_TRIAL=${CPUS_PER_TRIAL:-3}  # the same in both sweeps: four trials at once take 12 of the GPU machine's 16
LIP_SIZE=32  # the smoke space's: the prepared cache must be the sweeps'
PACK_TRAIN=${PACK_TRAIN:-96} PACK_VAL=${PACK_VAL:-24} PACK_TEST=${PACK_TEST:-16}

usage() { echo "usage: scripts/device_check.sh [--dry-run | --pack [CORPUS]]" >&2; exit 2; }

# --- on the dev machine: the corpus subset --------------------------------------------------------------------
pack() {
    local corpus=${1:-data/corpus/medium} out="$BUNDLE/corpus.tar.xz" tmp split name n
    [ -f "$corpus/train_manifest.txt" ] || {
        echo "$corpus has no train_manifest.txt: build it with python experiments/make_corpus.py --size medium" >&2
        return 1
    }
    tmp=$(mktemp -d)
    mkdir -p "$tmp/corpus" "$BUNDLE"
    for split in "train:$PACK_TRAIN" "val:$PACK_VAL" "test:$PACK_TEST"; do
        name=${split%%:*} n=${split##*:}
        grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$corpus/${name}_manifest.txt" | head -n "$n" \
            >"$tmp/corpus/${name}_manifest.txt"
        # the built-in corpus's media paths are relative to its folder: copied as they are, the manifests still hold
        cut -d'|' -f1,2 "$tmp/corpus/${name}_manifest.txt" | tr '|' '\n' | while read -r file; do
            mkdir -p "$tmp/corpus/$(dirname "$file")" && cp "$corpus/$file" "$tmp/corpus/$file" || exit 1
        done || { rm -rf "$tmp"; echo "cannot copy the media of $corpus/${name}_manifest.txt" >&2; return 1; }
    done
    for extra in lexicon.txt speakers.tsv; do [ -f "$corpus/$extra" ] && cp "$corpus/$extra" "$tmp/corpus/"; done
    tar -cf - -C "$tmp" corpus | xz -6 -T1 >"$out"
    echo "$out: $(du -m "$out" | cut -f1) MB, $(cat "$tmp"/corpus/*_manifest.txt | wc -l) utterances from $corpus"
    rm -rf "$tmp"
}

# --- the steps --------------------------------------------------------------------------------------------------
declare -A WALL STATUS
ORDER=()
DEADLINE=$((SECONDS + TOTAL_S))

x() {  # x COMMAND...: print it (on stderr: its stdout may be redirected), then run it in what is left of its step's limit
    echo "\$ $*" >&2
    [ "$DRY_RUN" = 1 ] && return 0
    local left=$((STEP_END - SECONDS))
    [ "$left" -gt 0 ] || return 124
    timeout --signal=INT --kill-after=20 "$left" "$@"  # INT: a sweep stops its trials and Ray as on Ctrl-C
}

step() {  # step NAME LIMIT_S LINES FUNCTION [ARGS]: FUNCTION's output to its log; its last LINES lines printed
    local name=$1 limit=$2 lines=$3 log started code
    shift 3
    ORDER+=("$name")
    LIMIT=$(( DEADLINE - SECONDS < limit ? DEADLINE - SECONDS : limit ))
    echo
    echo "== $name (at most ${LIMIT} s)"
    if [ "$DRY_RUN" = 1 ]; then "$@"; STATUS[$name]=dry-run; return 0; fi
    if [ "$LIMIT" -lt 10 ]; then STATUS[$name]="skipped: out of time"; echo "${STATUS[$name]}"; return 0; fi
    log="$LOGS/$name.log"
    started=$SECONDS
    STEP_END=$((started + LIMIT))
    "$@" >"$log" 2>&1
    code=$?
    WALL[$name]=$((SECONDS - started))
    case $code in
        0) STATUS[$name]=ok ;;
        124 | 130 | 137) STATUS[$name]="TIMED OUT after ${LIMIT} s" ;;  # 130: a sweep stopped by the INT
        *) STATUS[$name]="FAILED (exit $code)" ;;
    esac
    # tqdm redraws its bars with carriage returns: keep each line's last state, drop the bars
    tr '\r' '\n' <"$log" | grep -v -E '[0-9]+%\||it/s\]|batch/s\]|utt/s\]|^\s*$' | tail -n "$lines"
    echo "-- $name: ${STATUS[$name]}, ${WALL[$name]} s (log: $log)"
}

unpack() {
    if [ -f "$BUNDLE/site312.tar.xz" ]; then
        x "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12), f"the bundle holds Python 3.12 wheels, not {sys.version}"' \
            && x tar -xJf "$BUNDLE/site312.tar.xz" -C "$WORK/site" || return
    else
        echo "no $BUNDLE/site312.tar.xz: using this machine's own packages (build the bundle: device_bundle_readme)"
    fi
    if [ -f "$BUNDLE/corpus.tar.xz" ]; then
        x tar -xJf "$BUNDLE/corpus.tar.xz" -C "$WORK" || return
    else
        echo "no $BUNDLE/corpus.tar.xz: building the smoke corpus (needs espeak-ng, festival and flite; without them,"
        echo "run scripts/device_check.sh --pack on the dev machine: device_bundle_readme)"
        x "$PY" experiments/make_corpus.py --size smoke --out "$CORPUS" || return
    fi
    [ "$DRY_RUN" = 1 ] || write_space
    x "$PY" -c 'import sys, torch, onnxruntime, ray, mlflow; c = torch.cuda.is_available(); print(sys.version.split()[0], "torch", torch.__version__, "onnxruntime", onnxruntime.__version__, "ray", ray.__version__, "mlflow", mlflow.__version__, "|", torch.cuda.get_device_name() if c else "NO CUDA DEVICE"); sys.exit(not c)' \
        || return
    if command -v nvidia-smi >/dev/null; then
        x nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
}

write_space() {  # the smoke recipe in EPOCHS epochs, one seed: what both sweeps train
    cat >"$SPACE" <<EOF
"""The device check's sweeps: the smoke space's recipe for $EPOCHS epochs, one seed per fusion (scripts/device_check.sh)."""

from tune_spaces.smoke import SPACE as SMOKE

SPACE = {**SMOKE, "epochs": $EPOCHS, "patience": $EPOCHS}
NUM_SAMPLES = 1
SEEDS = 1
SCHEDULER = "fifo"
EOF
}

run_pytest() {
    x "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_device.py tests/test_precision.py
}

train_step() {
    x "$PY" benchmarks/train_step.py --device cuda --model original --batch-size 16 --steps 20 \
        --precisions fp32 bf16 --layouts channels_last
}

prepare() {  # the feature cache and the MLflow store (its schema is made once): neither sweep pays for them
    x "$PY" -c "from mlflow import MlflowClient; MlflowClient('$MLFLOW_URI').search_experiments()" || return
    x "$PY" experiments/prepare.py --manifest "$CORPUS/train_manifest.txt" --manifest "$CORPUS/val_manifest.txt" \
        --manifest "$CORPUS/test_manifest.txt" --cache-dir "$WORK/cache" --lip-size "$LIP_SIZE"
}

sweep() {  # sweep NAME GPUS_PER_TRIAL, with the GPU's memory and utilisation sampled meanwhile
    local monitor=""
    if [ "$DRY_RUN" != 1 ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 >"$LOGS/$1.gpu.csv" &
        monitor=$!
    fi
    x "$PY" experiments/sweep_fusion.py --space "$SPACE" --seeds 1 --name "$1" --gpus-per-trial "$2" \
        --cpus-per-trial "$CPUS_PER_TRIAL" --train-manifest "$CORPUS/train_manifest.txt" \
        --val-manifest "$CORPUS/val_manifest.txt" --test-manifest "$CORPUS/test_manifest.txt" \
        --storage-path "$WORK/sweeps" --cache-dir "$WORK/cache" --mlflow-uri "$MLFLOW_URI"
    local code=$?
    [ -n "$monitor" ] && kill "$monitor" 2>/dev/null
    return $code
}

transcribe() {  # the champion of the last sweep, on CUDA then on the CPU: the same transcripts?
    local checkpoint="<the champion of sweep-quarter>/best_model.pth"
    if [ "$DRY_RUN" != 1 ]; then
        checkpoint=$(champion_checkpoint sweep-quarter) || return
    fi
    local device sink=/dev/null
    for device in cuda cpu; do
        [ "$DRY_RUN" = 1 ] || sink="$LOGS/transcribe-$device.jsonl"
        x "$PY" experiments/transcribe.py --model "$checkpoint" --device "$device" \
            --manifest "$CORPUS/test_manifest.txt" >"$sink" || return
    done
    [ "$DRY_RUN" = 1 ] || "$PY" - "$LOGS/transcribe-cuda.jsonl" "$LOGS/transcribe-cpu.jsonl" <<'EOF'
import json, statistics, sys

cuda, cpu = ([json.loads(line) for line in open(path)] for path in sys.argv[1:])
same = sum(a.get("transcript") == b.get("transcript") for a, b in zip(cuda, cpu))
ms = [statistics.median(r["latency_ms"] for r in rows if "latency_ms" in r) for rows in (cuda, cpu)]
print(f"{same} of {len(cuda)} transcripts equal on CUDA and CPU; median latency {ms[0]:.1f} ms and {ms[1]:.1f} ms")
EOF
}

champion_checkpoint() {  # the best_model.pth of sweep $1's champion, read from its MLflow parent run
    "$PY" - "$MLFLOW_URI" "$1" <<'EOF'
import sys

from mlflow import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.sweep.champion import CHECKPOINT_TAG
from avasr.sweep.driver import DEFAULT_EXPERIMENT

uri, name = sys.argv[1:]
client = MlflowClient(uri)
experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id
parent = client.search_runs([experiment], f"attributes.run_name = '{name}'", max_results=1)[0]
champion = parent.data.tags["avasr.champion_run_id"]
print(f"{client.get_run(champion).data.tags[CHECKPOINT_TAG]}/{BEST_CHECKPOINT}")
EOF
}

sweep_figures() {  # one line per sweep: trials' span from Tune's results (also in $LOGS/NAME.span); GPU figures
    "$PY" - "$WORK/sweeps/$1" "$LOGS/$1.gpu.csv" "$LOGS/$1.span" <<'EOF' 2>/dev/null || echo "no figures (see its log)"
import sys
from pathlib import Path

from ray.tune import ExperimentAnalysis

frames = [f for f in ExperimentAnalysis(sys.argv[1]).trial_dataframes.values() if len(f)]
start = min(f["timestamp"].iloc[0] - f["time_total_s"].iloc[0] for f in frames)
span = max(f["timestamp"].iloc[-1] for f in frames) - start
Path(sys.argv[3]).write_text(f"{span:.0f}\n")
gpu = ""
monitor = Path(sys.argv[2])
lines = monitor.read_text().splitlines() if monitor.is_file() else []
samples = [line.split(",") for line in lines if line.count(",") == 1]
if samples:
    used, busy = [float(m) for m, _ in samples], [float(u) for _, u in samples]
    gpu = f"; GPU memory peak {max(used):.0f} MiB, utilisation mean {sum(busy) / len(busy):.0f} % (max {max(busy):.0f} %)"
print(f"{len(frames)} trials reported; trials' span {span:.0f} s{gpu}")
EOF
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

summary() {
    echo
    echo "== summary"
    local name failed=0
    for name in "${ORDER[@]}"; do
        printf '%-14s %-28s %s\n' "$name" "${STATUS[$name]}" "${WALL[$name]:+${WALL[$name]} s}"
        [ "${STATUS[$name]}" = ok ] || failed=1
    done
    for name in sweep-1gpu sweep-quarter; do
        [ -n "${WALL[$name]:-}" ] && echo "$name: $(sweep_figures "$name")"
    done
    if [ -n "${WALL[sweep-1gpu]:-}" ] && [ -n "${WALL[sweep-quarter]:-}" ] && [ "${WALL[sweep-quarter]}" -gt 0 ]; then
        echo "sweeps' wall time: 1 GPU per trial ${WALL[sweep-1gpu]} s, 0.25 GPU per trial ${WALL[sweep-quarter]} s:" \
            "$(ratio "${WALL[sweep-1gpu]}" "${WALL[sweep-quarter]}")x sooner"
    fi
    if [ -s "$LOGS/sweep-1gpu.span" ] && [ -s "$LOGS/sweep-quarter.span" ]; then
        echo "trials' span: $(ratio "$(cat "$LOGS/sweep-1gpu.span")" "$(cat "$LOGS/sweep-quarter.span")")x sooner" \
            "at 0.25 GPU per trial (goal: 2.5x)"
    fi
    return $failed
}

# --- main -------------------------------------------------------------------------------------------------------
DRY_RUN=0
case ${1:-} in
    --pack) shift; pack "$@"; exit $? ;;
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) usage ;;
esac

CORPUS="$WORK/corpus"
SPACE="$WORK/gpu_space.py"
MLFLOW_URI="sqlite:///$WORK/mlflow.db"
LOGS=${OUT:+$OUT/device_check}
LOGS=${LOGS:-$WORK/logs}
if [ "$DRY_RUN" = 1 ]; then
    exec 2>&1  # the commands (printed on stderr) in order with the steps
else
    rm -rf "$WORK" && mkdir -p "$WORK/site" "$LOGS" || exit 1
fi
export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE=disabled TQDM_MININTERVAL=5

# the limits (s) are 1.5-4x what each step is expected to take on one H100; no GPU run has measured them yet
step unpack 60 8 unpack
if [ "$DRY_RUN" != 1 ] && [ "${STATUS[unpack]}" != ok ]; then summary; exit 1; fi  # nothing else can run
step pytest 90 6 run_pytest
step train-step 120 16 train_step
step prepare 60 4 prepare
step sweep-1gpu 180 16 sweep sweep-1gpu 1
step sweep-quarter 120 16 sweep sweep-quarter 0.25
step transcribe 60 4 transcribe
[ "$DRY_RUN" = 1 ] && exit 0
summary
