#!/usr/bin/env bash
# Tiny background-process helper shared by deploy/stack.sh and the services.
#
#   proc.sh start NAME -- CMD ARGS...   start CMD in its own session (setsid), stdout+stderr appended to
#                                       .run/logs/NAME.log, pid in .run/pids/NAME.pid; no-op if alive
#   proc.sh stop [-t SECS] NAME...      TERM (whole process group when NAME leads one), wait up to SECS
#                                       (default 10, env PROC_STOP_TIMEOUT), then KILL; removes the pidfile.
#                                       A leader that died alone (a supervisor killed with -9) leaves its group:
#                                       what is left of it (the supervised child) is stopped the same way
#   proc.sh alive NAME                  exit 0 if the pidfile names a live process, 1 otherwise
#   proc.sh pid NAME                    print the pid of a live process (exit 1 if not alive)
#   proc.sh list                        names of all pidfiles in .run/pids
#
# CMD runs in the caller's working directory. The run dir defaults to <repo>/.run (env RG_RUN_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RG_RUN_DIR:-$ROOT/.run}"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"

die() { echo "proc.sh: $*" >&2; exit 2; }
now_ms() { date +%s%3N; }

check_name() {
  [[ "${1:-}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad process name: '${1:-}'"
}

# pid_alive PID: true for a live, non-zombie process
pid_alive() {
  local pid="$1" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    # field 3 of /proc/PID/stat (after the parenthesised comm, which may contain spaces)
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  fi
  return 0
}

# group_left PID: the process group PID led still has members although PID itself is gone. Linux does not reuse
# a pid while it still names a process group, so this is never someone else's group.
group_left() {
  [[ "$1" =~ ^[0-9]+$ ]] && ! pid_alive "$1" && pgrep -g "$1" >/dev/null 2>&1
}

# running PID: the process, or what is left of the group it led
running() { pid_alive "$1" || group_left "$1"; }

read_pid() {
  local f="$PID_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(tr -dc '0-9' < "$f" 2>/dev/null || true)"
  [[ -n "$pid" ]] || return 1
  echo "$pid"
}

is_alive() {
  local pid
  pid="$(read_pid "$1")" || return 1
  pid_alive "$pid"
}

# signal_tree PID SIG: the whole process group when PID leads one (processes started by `start`), else PID
signal_tree() {
  local pid="$1" sig="$2" pgid
  pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
  if [[ -n "$pgid" && "$pgid" == "$pid" ]]; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
  else
    kill "-$sig" "$pid" 2>/dev/null || true
  fi
}

cmd_start() {
  local name="${1:-}"; shift || true
  check_name "$name"
  [[ "${1:-}" == "--" ]] || die "usage: proc.sh start NAME -- CMD ARGS..."
  shift
  [[ $# -gt 0 ]] || die "usage: proc.sh start NAME -- CMD ARGS..."
  mkdir -p "$PID_DIR" "$LOG_DIR"
  if is_alive "$name"; then
    echo "$name: already running (pid $(read_pid "$name"))"
    return 0
  fi
  local log="$LOG_DIR/$name.log"
  printf '=== %s start: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$log"
  # No job control in a script, so the background child is not a group leader and setsid(1) calls
  # setsid(2) and execs CMD in place: $! is CMD's pid and CMD leads a new session + process group.
  # only stdin/stdout/stderr reach CMD: a long-running process must not keep the caller's descriptors (e.g. a
  # flock on a lock file) open for its whole life
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && (( fd > 2 && fd < 255 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" >> "$log" 2>&1 < /dev/null
  ) &
  local pid=$!
  echo "$pid" > "$PID_DIR/$name.pid.tmp"
  mv -f "$PID_DIR/$name.pid.tmp" "$PID_DIR/$name.pid"
  echo "$name: started (pid $pid, log $log)"
}

cmd_stop() {
  local timeout="${PROC_STOP_TIMEOUT:-10}"
  if [[ "${1:-}" == "-t" ]]; then timeout="${2:?-t needs seconds}"; shift 2; fi
  [[ $# -gt 0 ]] || die "usage: proc.sh stop [-t SECS] NAME..."
  local name pid
  local -a pids=() names=()
  for name in "$@"; do
    check_name "$name"
    if pid="$(read_pid "$name")" && pid_alive "$pid"; then
      signal_tree "$pid" TERM
      pids+=("$pid"); names+=("$name")
    elif [[ -n "${pid:-}" ]] && group_left "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name")
    else
      rm -f "$PID_DIR/$name.pid"
    fi
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  local deadline=$(( $(now_ms) + timeout * 1000 )) i any
  while :; do
    any=0
    for i in "${!pids[@]}"; do
      if running "${pids[$i]}"; then any=1; fi
    done
    [[ $any -eq 1 ]] || break
    if (( $(now_ms) >= deadline )); then
      for i in "${!pids[@]}"; do
        if pid_alive "${pids[$i]}"; then
          echo "${names[$i]}: still alive after ${timeout}s, sending KILL" >&2
          signal_tree "${pids[$i]}" KILL
        elif group_left "${pids[$i]}"; then
          echo "${names[$i]}: process group still alive after ${timeout}s, sending KILL" >&2
          kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
        fi
      done
      # give the kernel a moment to reap; KILL cannot be ignored
      local kdeadline=$(( $(now_ms) + 5000 ))
      while (( $(now_ms) < kdeadline )); do
        any=0
        for i in "${!pids[@]}"; do if running "${pids[$i]}"; then any=1; fi; done
        [[ $any -eq 1 ]] || break
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    rm -f "$PID_DIR/${names[$i]}.pid"
    echo "${names[$i]}: stopped (pid ${pids[$i]})"
  done
}

cmd_list() {
  [[ -d "$PID_DIR" ]] || return 0
  local f
  for f in "$PID_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    f="${f##*/}"; echo "${f%.pid}"
  done
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop)  shift; cmd_stop "$@" ;;
  alive) shift; check_name "${1:-}"; is_alive "$1" ;;
  pid)   shift; check_name "${1:-}"; is_alive "$1" && read_pid "$1" ;;
  list)  cmd_list ;;
  *) echo "usage: proc.sh start NAME -- CMD ARGS... | stop [-t SECS] NAME... | alive NAME | pid NAME | list" >&2; exit 2 ;;
esac
