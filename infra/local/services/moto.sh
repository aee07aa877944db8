# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# moto: part of infra/local/services.sh, which sources it.

# --- moto ----------------------------------------------------------------------

# moto's server, started through infra/local/moto/ferry_moto.py: the same
# server plus MSK's GetBootstrapBrokers, which moto lacks (see that file).
MOTO_LAUNCHER="$LOCAL_DIR/moto/ferry_moto.py"
moto_pidfile() { echo "$MOTO_DIR/moto.pid"; }
moto_marker() { echo "$MOTO_LAUNCHER"; }
moto_live_pid() { live_pid "$(moto_pidfile)" "$(moto_marker)"; }
moto_answers() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$MOTO_URL/moto-api/") == 200 ]]
}

moto_start() {
  mkdir -p "$MOTO_DIR"
  log "moto: starting on $MOTO_URL"
  launch "$(moto_pidfile)" "$MOTO_DIR/moto.log" \
    "$VENV/bin/python" "$MOTO_LAUNCHER" -H 127.0.0.1 -p "$MOTO_PORT"
}

# A moto started as `moto_server` itself, by an `up` from before
# ferry_moto.py, lacks GetBootstrapBrokers: stopped, so that `up` starts the
# one that has it (moto keeps its state in memory; `up` sets the secrets
# again) and `down` leaves nothing behind.
MOTO_LEGACY_MARKER="$VENV/bin/moto_server"
moto_stop_legacy() {
  live_pid "$(moto_pidfile)" "$MOTO_LEGACY_MARKER" >/dev/null || return 0
  stop_service moto "$(moto_pidfile)" "$MOTO_LEGACY_MARKER"
}

moto_stop() {
  if live_pid "$(moto_pidfile)" "$MOTO_LEGACY_MARKER" >/dev/null; then
    moto_stop_legacy
  else
    stop_service moto "$(moto_pidfile)" "$(moto_marker)"
  fi
}

moto_wait() {
  local deadline=$((SECONDS + READY_TIMEOUT)) watched
  watched=$(moto_live_pid) || watched=""
  until moto_answers; do
    if [[ -n $watched ]] && ! moto_live_pid >/dev/null; then
      show_log "$MOTO_DIR/moto.log"
      die "moto exited before answering"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$MOTO_DIR/moto.log"
      die "moto not answering on $MOTO_URL/moto-api/ after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
}
