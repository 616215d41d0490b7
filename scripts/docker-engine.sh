#!/usr/bin/env bash
# Makes a Docker engine available: installs Debian's docker.io when docker is
# missing, starts dockerd (overlay2, no iptables, no bridge: sandbox containers
# use network "none") when none answers, and waits for it. Needs root for the
# install and the daemon; a user whose engine already runs needs neither.
set -euo pipefail
log() { printf '[docker-engine] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  log "a Docker engine is running"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no Docker engine and cannot install one here (install docker.io, or use --sandbox bwrap)"
    exit 1
  fi
  log "installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  log "dockerd is installed but not running; start it (sudo systemctl start docker)"
  exit 1
fi
log "starting dockerd (overlay2, --iptables=false --bridge=none)"
mkdir -p /var/log/minionflow
nohup dockerd --storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none \
  >/var/log/minionflow/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "dockerd is up ($(docker info --format '{{.Driver}}'))"
    exit 0
  fi
  sleep 1
done
log "dockerd did not start; see /var/log/minionflow/dockerd.log"
tail -20 /var/log/minionflow/dockerd.log >&2
exit 1
