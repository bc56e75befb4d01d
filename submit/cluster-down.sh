#!/usr/bin/env bash
# Stop the one-node SLURM cluster that cluster-up.sh started (jobs still running are cancelled).
set -uo pipefail
command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null
pkill -x slurmd 2>/dev/null
pkill -x slurmctld 2>/dev/null
pkill -x munged 2>/dev/null
echo "cluster-down: stopped slurmd, slurmctld and munged"
