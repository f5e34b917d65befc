# The local suite: every daemon on loopback, pid and log files under var/, started only
# when not already running from this tree.

SUITE_DAEMONS=(controller ingress relay policy retry ndn bypass)
SUITE_API_PORT=${HERMES_API_PORT:-7100}
SUITE_PUSH_PORT=${HERMES_PUSH_PORT:-7101}

suite_binary() { [ "$1" = controller ] && echo "$BUILD_DIR/bin/hermes-controller" || echo "$BUILD_DIR/bin/hermes-$1"; }

# True when var/run/NAME.pid names a live process running this tree's binary.
suite_running() {
  local pidfile="$VAR_DIR/run/$1.pid" pid exe
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$(suite_binary "$1")" ]
}

suite_ctl() {
  HERMES_KEYS_DIR="$VAR_DIR/keys" HERMES_CONTROLLER="tcp://127.0.0.1:$SUITE_API_PORT" \
    "$BUILD_DIR/bin/hermesctl" "$@"
}

suite_start() {
  local name=$1 bin args=()
  bin=$(suite_binary "$name")
  if [ "$name" = controller ]; then
    args=(--db "$VAR_DIR/hermes.db" --keys-dir "$VAR_DIR/keys"
          --api-bind "tcp://127.0.0.1:$SUITE_API_PORT" --push-bind "tcp://127.0.0.1:$SUITE_PUSH_PORT")
  else
    args=(--keys-dir "$VAR_DIR/keys" --instance "$name-1"
          --controller "tcp://127.0.0.1:$SUITE_API_PORT" --controller-push "tcp://127.0.0.1:$SUITE_PUSH_PORT")
  fi
  # everything on loopback: the local suite serves this host only
  case "$name" in
    relay) args+=(--listen "127.0.0.1:${HERMES_RELAY_PORT:-4433}") ;;
    policy) args+=(--listen "tcp://127.0.0.1:${HERMES_POLICY_PORT:-7200}") ;;
    bypass) args+=(--socket "$VAR_DIR/run/hermes-bypass.sock") ;;
    ingress) args+=(--policy "tcp://127.0.0.1:${HERMES_POLICY_PORT:-7200}"
                    --http-listen "127.0.0.1:${HERMES_HTTP_PORT:-3128}"
                    --h2-listen "127.0.0.1:${HERMES_H2_PORT:-3129}"
                    --transparent-listen "127.0.0.1:${HERMES_TRANSPARENT_PORT:-3130}") ;;
  esac
  setsid "$bin" "${args[@]}" >>"$VAR_DIR/log/$name.log" 2>&1 </dev/null &
  echo $! >"$VAR_DIR/run/$name.pid"
}

# Polls `hermesctl status --json` until every daemon of the suite is up on the current
# version, for at most $1 seconds.
suite_wait_converged() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    if suite_ctl status --json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
st = json.load(sys.stdin)
want = set(sys.argv[1:])
ok = {s["instance"] for s in st["services"]
      if s["state"] == "up" and s["applied_version"] == st["config_version"]}
sys.exit(0 if want <= ok else 1)' "${SUITE_DAEMONS[@]/%/-1}" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

suite_up() {
  mkdir -p "$VAR_DIR/run" "$VAR_DIR/log"
  suite_ctl keygen --dir "$VAR_DIR/keys" >/dev/null
  local name started=()
  for name in "${SUITE_DAEMONS[@]}"; do
    if suite_running "$name"; then continue; fi
    suite_start "$name"
    started+=("$name")
    if [ "$name" = controller ]; then
      local deadline=$((SECONDS + 10))
      until suite_ctl status >/dev/null 2>&1; do
        if ! suite_running controller || [ $SECONDS -ge $deadline ]; then
          echo "hermes up: the controller did not start; its log ($VAR_DIR/log/controller.log) ends with:" >&2
          tail -n 5 "$VAR_DIR/log/controller.log" >&2
          return 1
        fi
        sleep 0.1
      done
    fi
  done
  # The default topology: this host as one node, created once.
  if [ "$(suite_ctl node list --json)" = "[]" ]; then
    suite_ctl node add local --address 127.0.0.1 --site local >/dev/null
  fi
  # The controller's instance name in status is "controller"; the others are NAME-1.
  SUITE_DAEMONS=("${SUITE_DAEMONS[@]:1}")
  if ! suite_wait_converged 15; then
    echo "hermes up: not every daemon registered and applied the current config in 15 s:" >&2
    suite_ctl status >&2 || true
    return 1
  fi
  SUITE_DAEMONS=(controller "${SUITE_DAEMONS[@]}")
  if [ ${#started[@]} -gt 0 ]; then echo "started: ${started[*]}"; else echo "everything was already running"; fi
  echo
  suite_ctl status
  cat <<TXT

proxy:    http://127.0.0.1:${HERMES_HTTP_PORT:-3128} (HTTP/1.1), https://127.0.0.1:${HERMES_H2_PORT:-3129} (HTTP/2, or HTTP/1.1 inside TLS; CA $VAR_DIR/keys/tls/ca.crt)
          every flow is denied until a policy allows it (no open proxy), e.g.
          echo '{"id":"local","action":"allow","match":{"dst":["127.0.0.0/8"]}}' | scripts/hermes ctl policy add -
database: $VAR_DIR/hermes.db   keys: $VAR_DIR/keys   logs: scripts/hermes logs [DAEMON]
admin:    HERMES_KEYS_DIR=$VAR_DIR/keys $BUILD_DIR/bin/hermesctl --help  (or scripts/hermes ctl ...)
stop:     scripts/hermes down
TXT
}

suite_down() {
  local name pid pidfile stopped=()
  for name in "${SUITE_DAEMONS[@]}"; do
    pidfile="$VAR_DIR/run/$name.pid"
    [ -f "$pidfile" ] || continue
    if suite_running "$name"; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
      # TERM is a graceful stop: ingress and relay give open flows drain_s (10 s)
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
      stopped+=("$name")
    fi
    rm -f "$pidfile"
  done
  if [ ${#stopped[@]} -gt 0 ]; then echo "stopped: ${stopped[*]}"; else echo "nothing was running"; fi
}

suite_logs() {
  local name
  if [ $# -gt 0 ]; then
    [ -f "$VAR_DIR/log/$1.log" ] || { echo "hermes logs: no log for '$1' (daemons: ${SUITE_DAEMONS[*]})" >&2; return 2; }
    cat "$VAR_DIR/log/$1.log"
    return
  fi
  for name in "${SUITE_DAEMONS[@]}"; do
    [ -f "$VAR_DIR/log/$name.log" ] || continue
    echo "==> $name <=="
    tail -n 20 "$VAR_DIR/log/$name.log"
  done
}
