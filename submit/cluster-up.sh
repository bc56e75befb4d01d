#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine (Debian's slurm-wlm and munge), for tests and
# for trying hydra/launcher=slurm without a real cluster. Safe to run twice: a running cluster is
# left alone. Needs root (it installs packages and starts daemons). Stop it with cluster-down.sh.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm

say() { echo "cluster-up: $*"; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: the authentication daemon every SLURM command talks through
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null; then mungekey --create --force; else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host=$(hostname -s)
cpus=$(nproc)
# leave 1 GiB to the system; SLURM refuses a node that reports less memory than configured
mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
cat > "$CONF_DIR/slurm.conf.new" <<CONF
# written by mlbasics submit/cluster-up.sh: one node, this machine
ClusterName=mlbasics
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
# an unchanged config keeps a running cluster as it is
if [ -f "$CONF_DIR/slurm.conf" ] && cmp -s "$CONF_DIR/slurm.conf" "$CONF_DIR/slurm.conf.new"; then
  rm "$CONF_DIR/slurm.conf.new"
else
  mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
  say "wrote $CONF_DIR/slurm.conf ($host, $cpus CPUs, $mem_mb MB)"
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  sleep 1
fi

# a daemon that is running but does not answer (say, one left half-stopped) is replaced
if pgrep -x slurmctld >/dev/null && ! timeout 5 scontrol ping >/dev/null 2>&1; then
  say "slurmctld does not answer; restarting it"
  pkill -x slurmctld; sleep 1; pkill -9 -x slurmctld 2>/dev/null || true
fi
pgrep -x slurmctld >/dev/null || { say "starting slurmctld"; slurmctld; }
pgrep -x slurmd >/dev/null || { say "starting slurmd"; slurmd; }

for _ in $(seq 60); do
  # a bounded wait: sinfo retries for a long time while no controller answers
  state=$(timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null || true)
  case "$state" in
    idle|mix|alloc) say "node $host is $state"; exit 0 ;;
    down*|drain*) timeout 5 scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
say "node $host did not become idle; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log" >&2
timeout 5 sinfo >&2 || true
exit 1
