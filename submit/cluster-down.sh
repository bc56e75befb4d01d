#!/usr/bin/env bash
# Stop the one-node SLURM cluster that cluster-up.sh started (jobs still running are cancelled).
set -uo pipefail
command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld munged; do
  pkill -x "$daemon" 2>/dev/null
  # wait until it is gone, so that a cluster-up right after starts a fresh one
  for _ in $(seq 100); do pgrep -x "$daemon" >/dev/null || break; sleep 0.1; done
  pkill -9 -x "$daemon" 2>/dev/null
done
echo "cluster-down: stopped slurmd, slurmctld and munged"
