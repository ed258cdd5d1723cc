#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   .ci/slurm-cluster.sh start   install Debian's slurmctld slurmd slurm-client munge if missing,
#                                write a one-node slurm.conf, start munged, slurmctld and slurmd
#   .ci/slurm-cluster.sh stop    stop the daemons this script started
#   .ci/slurm-cluster.sh status  sinfo
#
# Needs root (the daemons run as root: proctrack/linuxproc and task/none need no cgroups, there
# is no accounting database, and a high MinJobAge keeps finished jobs visible to squeue, which
# the Snakemake SLURM executor polls). Exits non-zero with the reason when SLURM cannot start.
set -euo pipefail

STATE=${IFPLAY_SLURM_STATE:-/var/lib/ifplay-slurm}
CONF=/etc/slurm/slurm.conf

die() { echo "slurm-cluster: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "no slurmctld/slurmd and no apt-get to install them"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             slurmctld slurmd slurm-client munge >/dev/null; } || die "apt-get could not install SLURM"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100 ))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" /var/log/slurm
    cat > "$CONF" <<CONF
# written by ifplay .ci/slurm-cluster.sh: a one-node test cluster
ClusterName=ifplay
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=86400
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    [ -s /etc/munge/munge.key ] || { mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; }
    mkdir -p /run/munge
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    su -s /bin/sh munge -c /usr/sbin/munged || /usr/sbin/munged --force
    for _ in $(seq 20); do munge -n | unmunge >/dev/null 2>&1 && return; sleep 0.5; done
    die "munged did not start"
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root"
    install_packages
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then echo "slurm-cluster: already up"; return; fi
    write_conf
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
    pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then sinfo; return; fi
        sleep 0.5
    done
    die "the node did not become idle: $(sinfo -h 2>&1 | head -1)"
}

stop() {
    scancel --user=root 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 20); do { pgrep -x slurmd || pgrep -x slurmctld; } >/dev/null || break; sleep 0.5; done
    echo "slurm-cluster: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
