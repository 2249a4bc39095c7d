#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the sweep's Slurm test: Debian's slurm-wlm and
# munge, no cgroups (proctrack/linuxproc), the daemons started once. Idempotent: a second run
# installs nothing and starts nothing that is already running. Needs root.
set -euo pipefail

if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge \
         /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 700 /var/log/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || /usr/sbin/munged --force

conf=/etc/slurm/slurm.conf
if [ ! -f "$conf" ]; then
    host="$(hostname -s)"
    memory=$(( $(free -m | awk '/^Mem:/ { print $2 }') * 9 / 10 ))
    cat > "$conf" <<CONF
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmUser=root
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "slurm: $(sinfo -h -o '%P %D node(s) %T')"
        exit 0
    fi
    sleep 1
done
echo "slurm: the node did not come up; see /var/log/slurm/" >&2
exit 1
