#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian's slurm-wlm: slurmctld + slurmd + munge), for
# the Slurm test of the datatrove pipeline (tests/test_slurm.py) and for trying a Slurm run by
# hand. Needs root (apt, /etc/slurm, the daemons). Idempotent: a running cluster is left alone.
#   benchmarks/slurm/local-slurm.sh           install if needed, configure, start, wait for the node
#   benchmarks/slurm/local-slurm.sh stop      stop the daemons
set -euo pipefail

if [[ "${1:-}" == stop ]]; then
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
  exit 0
fi
if ! command -v slurmctld >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurm-wlm >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq slurm-wlm >/dev/null; }
fi
if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T 2>/dev/null | grep -q idle; then
  exit 0
fi
if [[ -f /etc/slurm/slurm.conf ]] && ! grep -q '^ClusterName=curate-local$' /etc/slurm/slurm.conf; then
  echo "/etc/slurm/slurm.conf configures another cluster; not touching it" >&2
  exit 1
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=curate-local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
[[ -s /etc/munge/munge.key ]] || mungekey --create
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then exit 0; fi
  scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "local Slurm did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
