#!/usr/bin/env bash
# Retrain and report: the steps of .github/workflows/retrain.yml, runnable on any machine
# (`make retrain`). Pull what the DVC remote has, reproduce the pipeline, push, write a
# Markdown report of what changed against BASE, and (COMMIT=1) commit the new dvc.lock and
# metrics, so the branch carries what it was retrained to.
#
#   BASE    git revision to diff params and metrics against (default: origin/main, else main)
#   PUSH    1 = dvc push, 0 = never, auto = only on branch main (default: auto)
#   COMMIT  1 = commit dvc.lock and the cache: false metrics when they changed (default: 0)
#   REPORT  where the Markdown report goes (default: reports/retrain.md); also printed
#   RETRAIN_CONFIG  a params overlay (e.g. configs/ci.yaml) to retrain with, through
#           `dvc exp run -S ...`; empty = params.yaml as committed (`dvc repro`). A lock built
#           from an overlay is never committed: it describes params that are not in git.
set -euo pipefail

DVC=${DVC:-dvc}
REPORT=${REPORT:-reports/retrain.md}
PUSH=${PUSH:-auto}
COMMIT=${COMMIT:-0}
if [ -z "${BASE:-}" ]; then
  if git rev-parse -q --verify origin/main >/dev/null; then BASE=origin/main; else BASE=main; fi
fi
log() { echo "retrain: $*" >&2; }

has_remote() { "$DVC" remote default >/dev/null 2>&1; }

if has_remote; then
  log "pulling cached outputs from the DVC remote (a miss is not an error)"
  "$DVC" pull --allow-missing || log "dvc pull failed; continuing, stages will rebuild"
else
  log "no DVC remote configured: nothing to pull"
fi

repro_log=$(mktemp)
trap 'rm -f "$repro_log"' EXIT
if [ -n "${RETRAIN_CONFIG:-}" ]; then
  log "retraining with the overlay $RETRAIN_CONFIG"
  python scripts/exp_run.py "$RETRAIN_CONFIG" 2>&1 | tee "$repro_log"
else
  "$DVC" repro 2>&1 | tee "$repro_log"
fi

branch=$(git rev-parse --abbrev-ref HEAD)
if has_remote && { [ "$PUSH" = 1 ] || { [ "$PUSH" = auto ] && [ "$branch" = main ]; }; }; then
  log "pushing outputs to the DVC remote"
  "$DVC" push
fi

python scripts/retrain_report.py --base "$BASE" --repro-log "$repro_log" \
  --overlay "${RETRAIN_CONFIG:-}" --out "$REPORT"

if [ "$COMMIT" = 1 ]; then
  if [ -n "${RETRAIN_CONFIG:-}" ]; then
    log "not committing: this lock comes from the overlay $RETRAIN_CONFIG, not params.yaml"
    exit 0
  fi
  # dvc.lock and the metrics, plus any .gitignore entry DVC added for a new output; only
  # these, whatever else is staged
  mapfile -t paths < <(python scripts/committed_outputs.py
                       git ls-files --modified --others --exclude-standard -- '*.gitignore')
  git add -- "${paths[@]}"
  if git diff --cached --quiet -- "${paths[@]}"; then
    log "dvc.lock and metrics already match this build: nothing to commit"
  else
    changed=$(python scripts/retrain_report.py --base "$BASE" --summary-line)
    git commit -q -m "retrain: dvc.lock and metrics for $(git rev-parse --short HEAD)" \
      -m "$changed" -m "Written by scripts/retrain.sh (make retrain COMMIT=1) after dvc repro." \
      -- "${paths[@]}"
    log "committed $(git rev-parse --short HEAD): $(git diff-tree --no-commit-id --name-only -r HEAD | paste -sd' ')"
  fi
fi
