# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# Tansu (a Kafka-compatible source, for compatibility runs): part of infra/local/services.sh, which sources it.

# --- Tansu (a Kafka-compatible source, for compatibility runs) -------------
# Tansu is a Kafka-compatible broker written in Rust, published on the Rust
# crate registry: `cargo install --locked` builds it once into
# .cache/tansu-<version> (about 15 minutes on two cores; its build directory
# is dropped afterwards). It runs with its memory storage engine (the
# `dynostore` feature; no feature is on by default) beside the local stack,
# on the source's port + 5, and keeps nothing across restarts.

TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore
TANSU_HOME="$CACHE_DIR/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_HOME/bin/tansu"
TANSU_DIR="$RUN_DIR/tansu"
TANSU_PORT=$((SOURCE_PORT + 5))
tansu_pidfile() { echo "$TANSU_DIR/tansu.pid"; }
tansu_live_pid() { live_pid "$(tansu_pidfile)" "$TANSU_BIN"; }

ensure_tansu() {
  local stamp="$TANSU_HOME/.ferry-features"
  stamp_matches "$stamp" "$TANSU_FEATURES" && [[ -x $TANSU_BIN ]] && return 0
  command -v cargo >/dev/null || die "no cargo on PATH"
  log "tansu: building Tansu $TANSU_VERSION into $TANSU_HOME (cargo install --locked; about 15 minutes the first time)"
  mkdir -p "$TANSU_HOME"
  if ! cargo install tansu --version "=$TANSU_VERSION" --features "$TANSU_FEATURES" --locked --force \
    --root "$TANSU_HOME" --target-dir "$CACHE_DIR/tansu-build" >"$TANSU_HOME/install.log" 2>&1; then
    show_log "$TANSU_HOME/install.log"
    die "cargo install tansu $TANSU_VERSION failed"
  fi
  rm -rf "$CACHE_DIR/tansu-build"
  echo "$TANSU_FEATURES" >"$stamp"
}

tansu_start() {
  mkdir -p "$TANSU_DIR"
  log "tansu: starting Tansu $TANSU_VERSION (memory storage) on 127.0.0.1:$TANSU_PORT"
  launch "$(tansu_pidfile)" "$TANSU_DIR/tansu.log" \
    "$TANSU_BIN" broker --cluster-id ferry-local-tansu \
    --listener-url "tcp://127.0.0.1:$TANSU_PORT" --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/
  if ! "$VENV/bin/python" "$LOCAL_DIR/wait_kafka.py" --timeout "$READY_TIMEOUT" \
    --broker "127.0.0.1:$TANSU_PORT" "$(tansu_live_pid || echo 0)" >/dev/null; then
    show_log "$TANSU_DIR/tansu.log"
    die "Tansu did not answer on 127.0.0.1:$TANSU_PORT"
  fi
}

# Quiet when Tansu never ran here.
tansu_stop() {
  [[ -f $(tansu_pidfile) ]] || return 0
  stop_service tansu "$(tansu_pidfile)" "$TANSU_BIN"
}
