#!/usr/bin/env bash
# Retrain and report: the steps of .github/workflows/retrain.yml, runnable on any machine
# (`make retrain`). Pull what the DVC remote has, reproduce the pipeline, push on main,
# then write a Markdown report of what changed against BASE.
#
#   BASE    git revision to diff params and metrics against (default: origin/main, else main)
#   PUSH    1 = dvc push, 0 = never, auto = only on branch main (default: auto)
#   REPORT  where the Markdown report goes (default: reports/retrain.md); also printed
#   RETRAIN_CONFIG  a params overlay (e.g. configs/ci.yaml) to retrain with, through
#           `dvc exp run -S ...`; empty = params.yaml as committed (`dvc repro`)
set -euo pipefail

DVC=${DVC:-dvc}
REPORT=${REPORT:-reports/retrain.md}
PUSH=${PUSH:-auto}
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

ran=$(sed -n "s/^Running stage '\([^']*\)'.*/\1/p" "$repro_log" | paste -sd, - | sed 's/,/, /g')
skipped=$(sed -nE "s/^(Stage '([^']*)' didn't change, skipping|Restored stage '([^']*)' from run-cache).*/\2\3/p" \
  "$repro_log" | paste -sd, - | sed 's/,/, /g')
run_id=$(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("run_id",""))' \
  models/mlflow_run.json 2>/dev/null || true)
registered=$(python -c 'import json,sys; r=json.load(open(sys.argv[1]))
print("%s version %s (%s)" % (r["model"], r["version"], ", ".join(r["aliases"])))' \
  models/registered.json 2>/dev/null || true)

mkdir -p "$(dirname "$REPORT")"
{
  echo "## Retrain report: \`$(git rev-parse --short HEAD)\` against \`$BASE\`"
  echo
  [ -n "${RETRAIN_CONFIG:-}" ] && echo "- params overlay: \`$RETRAIN_CONFIG\`"
  echo "- stages run: ${ran:-none}"
  echo "- stages unchanged or restored from cache: ${skipped:-none}"
  [ -n "$run_id" ] && echo "- MLflow run: \`$run_id\`"
  [ -n "$registered" ] && echo "- registered: $registered"
  echo
  echo "### Params changed"
  echo
  params=$("$DVC" params diff "$BASE" --md 2>&1 | sed '/^$/d' || true)
  echo "${params:-No param differs from \`$BASE\`.}"
  echo
  echo "### Metrics"
  echo
  metrics=$("$DVC" metrics diff "$BASE" --md --precision 3 2>&1 | sed '/^$/d' || true)
  echo "${metrics:-No metric differs from \`$BASE\`.}"
  if [ -f plots/samples.png ]; then
    echo
    echo "Digits drawn from the prior: \`plots/samples.png\`"
  fi
} > "$REPORT"
cat "$REPORT"
