#!/usr/bin/env bash
# One cnnsearch worker on a shared study. Start as many as you like, on any machines that
# reach the database: by hand, from Slurm (search/slurm_array.sh) or as Kubernetes pods
# (search/k8s_job.yaml). It needs nothing but a clone of this repository and a Python with
# cnnsearch's dependencies (.venv/bin/python when there, else PYTHON, else python3).
#
#   STORAGE=postgresql+psycopg://user@db-host:5432/cnnsearch STUDY=cifar10 TRIALS=100 search/worker.sh
#
# The first worker needs the recipe (RECIPE=studies/cifar10.toml) to create the study; later
# ones can join with STORAGE and STUDY only, since the recipe, its space and where its weights
# go are stored in the study. TRIALS is the study's total budget: each worker stops when the
# study reaches it. ARTIFACTS=s3://bucket/prefix (or a folder every machine mounts) sets where
# a new study keeps its weights; credentials and endpoint come from AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL (MinIO, Ceph, ...).
# GPUS_PER_NODE > 0 starts one worker per GPU on this node: the GPUs CUDA_VISIBLE_DEVICES
# lists (a scheduler's allocation, any ids), else 0..GPUS_PER_NODE-1.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STORAGE:?set STORAGE to an Optuna RDB URL, e.g. postgresql+psycopg://user@host/db}"
: "${STUDY:?set STUDY to the study name}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
args=(-m cnnsearch search ${RECIPE:+"$RECIPE"} --storage "$STORAGE" --study "$STUDY" --quiet)
if [ -n "${TRIALS:-}" ]; then
  args+=(--until "$TRIALS")
fi
if [ -n "${ARTIFACTS:-}" ]; then
  args+=(--artifacts "$ARTIFACTS")
fi
gpus=${GPUS_PER_NODE:-0}
if [ "$gpus" -gt 0 ]; then
  IFS=, read -r -a listed <<< "${CUDA_VISIBLE_DEVICES:-}"
  pids=()
  for ((i = 0; i < gpus; i++)); do
    gpu=$i
    if [ "${#listed[@]}" -gt 0 ]; then gpu=${listed[$((i % ${#listed[@]}))]}; fi
    echo "worker $i@$(hostname):$$ -> GPU $gpu"
    CUDA_VISIBLE_DEVICES=$gpu "$PYTHON" "${args[@]}" --worker-index "$i" --worker-id "$i@$(hostname):$$" &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  exit $status
fi
# a distinct identity per worker seeds its sampler: no two workers propose the same candidates
index=${WORKER_INDEX:-${SLURM_ARRAY_TASK_ID:-${SLURM_PROCID:-${JOB_COMPLETION_INDEX:-0}}}}
exec "$PYTHON" "${args[@]}" --worker-index "$index" --worker-id "${WORKER_ID:-$index@$(hostname):$$}"
