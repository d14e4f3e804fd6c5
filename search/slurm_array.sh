#!/usr/bin/env bash
# A Slurm array job of cnnsearch workers on one study: PostgreSQL for the study, an object
# store for the weights, no shared disk needed. Submit from the repository's root (a clone
# on the login node; every node needs the same clone path or its own clone, and a Python with
# cnnsearch's dependencies: .venv/bin/python, or PYTHON=...):
#
#   export STORAGE=postgresql+psycopg://user@db-host:5432/cnnsearch STUDY=cifar10 TRIALS=200
#   export PGPASSWORD=...    # the database's password: never in STORAGE (a command line: ps shows it)
#   export RECIPE=studies/cifar10.toml ARTIFACTS=s3://my-bucket/cnnsearch/cifar10
#   export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_ENDPOINT_URL=https://minio.example:9000
#   mkdir -p logs && sbatch --export=ALL search/slurm_array.sh
#
# Each array task is one worker on one GPU (Slurm sets CUDA_VISIBLE_DEVICES); more tasks
# join the same study at any time (another sbatch, or --array=8-15). A task that is preempted
# or killed leaves a trial that the others fail and re-run (heartbeats).
#SBATCH --job-name=cnnsearch
#SBATCH --array=0-7
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/cnnsearch-%A_%a.out
set -euo pipefail
# sbatch runs a copy of this file from its spool: the clone is where the job was submitted
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
export WORKER_INDEX=${SLURM_ARRAY_TASK_ID:-0}
export WORKER_ID="${SLURM_ARRAY_JOB_ID:-local}_${WORKER_INDEX}@$(hostname):$$"
exec search/worker.sh
