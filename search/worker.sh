#!/usr/bin/env bash
# One cnnsearch worker on a shared study. Start as many as you like, on any machines that
# reach the database: by hand, from Slurm (srun/sbatch arrays) or as Kubernetes pods.
#
#   STORAGE=postgresql+psycopg://user@db-host:5432/cnnsearch STUDY=cifar10 TRIALS=100 search/worker.sh
#
# The first worker needs the recipe (RECIPE=studies/cifar10.toml) to create the study; later
# ones can join with STORAGE and STUDY only, since the recipe and its space are stored in the
# study. TRIALS is the study's total budget: each worker stops when the study reaches it.
# GPUS_PER_NODE > 0 starts one worker per GPU on this node (CUDA_VISIBLE_DEVICES each).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STORAGE:?set STORAGE to an Optuna RDB URL, e.g. postgresql+psycopg://user@host/db}"
: "${STUDY:?set STUDY to the study name}"
PY=${PYTHON:-.venv/bin/python}
args=(-m cnnsearch search ${RECIPE:+"$RECIPE"} --storage "$STORAGE" --study "$STUDY" --quiet)
if [ -n "${TRIALS:-}" ]; then
  args+=(--until "$TRIALS")
fi
gpus=${GPUS_PER_NODE:-0}
if [ "$gpus" -gt 0 ]; then
  pids=()
  for ((i = 0; i < gpus; i++)); do
    CUDA_VISIBLE_DEVICES=$i "$PY" "${args[@]}" --worker-index "$i" --worker-id "$i@$(hostname):$$" &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  exit $status
fi
# a distinct identity per worker seeds its sampler: no two workers propose the same candidates
index=${WORKER_INDEX:-${SLURM_PROCID:-0}}
exec "$PY" "${args[@]}" --worker-index "$index" --worker-id "${WORKER_ID:-$index@$(hostname):$$}"
