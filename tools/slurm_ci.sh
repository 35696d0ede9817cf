#!/usr/bin/env bash
# A real two-node Slurm (22.05, Debian's packages) on this one machine, for the tests under tests/launch/.
#   eval "$(bash tools/slurm_ci.sh up)"     # prints `export SLURM_CONF=...`; clients need it
#   bash tools/slurm_ci.sh down             # stops only the daemons `up` started, by their pid files
# Needs root (CI runs as root) and installs slurmctld/slurmd/munge with apt-get when they are missing.
# Everything it starts lives under $SLURM_CI_DIR: its own munge key and socket, its own ports and spool,
# so a machine that already runs Slurm or munge is left alone. Nodes n1 and n2 are this host (two slurmd
# with -N), each with 8 fake GPUs (device files that are links to /dev/null), since train.sbatch asks for GPUs.
set -euo pipefail
dir=${SLURM_CI_DIR:-/tmp/megatron-grpo-slurm}
hosts_tag="# megatron-grpo slurm_ci"
nodes=(n1 n2)

log() { echo "slurm_ci: $*" >&2; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return
    ((EUID == 0)) || { log "slurmctld/slurmd/munge are missing and only root can install them"; exit 1; }
    # The packages' scripts would start the daemons through systemd; a policy that says no stops that.
    local policy=/usr/sbin/policy-rc.d saved=
    if [[ -e $policy ]]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >"$dir/apt.log" 2>&1 || rc=$?
    if [[ -n $saved ]]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    ((rc == 0)) || { log "apt-get failed ($rc); see $dir/apt.log"; exit 1; }
}

write_config() {
    local host cpus mem
    host=$(hostname)
    cpus=16  # declared, not real: convert.sbatch asks for 16 per task
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/dev"
    for i in 0 1 2 3 4 5 6 7; do ln -sf /dev/null "$dir/dev/nvidia$i"; done
    # A requeued job may start only cred_expire + 1 s after it ended: 10 s, not the default 120 s.
    cat > "$dir/slurm.conf" <<EOF
ClusterName=megatron-grpo-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=5,bf_interval=5
ReturnToService=2
MinJobAge=300
JobRequeue=1
MpiDefault=none
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$mem Gres=gpu:8 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$mem Gres=gpu:8 State=UNKNOWN
PartitionName=ci Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
    echo "Name=gpu Count=8 File=$dir/dev/nvidia[0-7]" > "$dir/gres.conf"
    head -c 1024 /dev/urandom > "$dir/munge.key"
    chmod 600 "$dir/munge.key"
}

# Runs "$@" until it succeeds, for up to $1 seconds.
retry() {
    local seconds=$1
    shift
    for ((i = 0; i < seconds * 2; i++)); do "$@" >/dev/null 2>&1 && return; sleep 0.5; done
    "$@"
}

nodes_idle() {
    [[ $(sinfo -h -N -o '%t' | sort -u | tr -d '\n') == idle ]]
}

up() {
    if [[ -e $dir/slurmctld.pid ]]; then log "already up ($dir); run 'down' first"; exit 1; fi
    mkdir -p "$dir"
    chmod 755 "$dir"
    install
    write_config
    export SLURM_CONF=$dir/slurm.conf
    grep -q "$hosts_tag" /etc/hosts || echo "127.0.0.1 ${nodes[*]} $hosts_tag" >> /etc/hosts
    munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"
    slurmctld
    for n in "${nodes[@]}"; do slurmd -N "$n"; done
    retry 30 nodes_idle || { log "nodes did not reach idle:"; sinfo -N >&2; tail -20 "$dir"/log/*.log >&2; exit 1; }
    log "up: nodes ${nodes[*]} idle, config $SLURM_CONF"
    echo "export SLURM_CONF=$SLURM_CONF"
}

# Sends SIGTERM to the process in pid file $1, and waits up to 10 s for it to exit.
stop() {
    [[ -e $1 ]] || return 0
    local pid
    pid=$(cat "$1")
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

down() {
    export SLURM_CONF=$dir/slurm.conf
    if [[ -e $dir/slurmctld.pid ]]; then
        scancel --full --quiet --user=root 2>/dev/null || true
    fi
    for n in "${nodes[@]}"; do stop "$dir/slurmd-$n.pid"; done
    stop "$dir/slurmctld.pid"
    stop "$dir/munged.pid"
    if grep -q "$hosts_tag" /etc/hosts; then
        # /etc/hosts may be a bind mount that cannot be replaced, so it is rewritten in place.
        local kept
        kept=$(grep -v "$hosts_tag" /etc/hosts)
        printf '%s\n' "$kept" > /etc/hosts
    fi
    rm -rf "$dir"
    log "down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: bash tools/slurm_ci.sh up|down" >&2; exit 2 ;;
esac
