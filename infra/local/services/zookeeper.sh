# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# ZooKeeper (source releases before 3.9): part of infra/local/services.sh, which sources it.

# --- ZooKeeper (source releases before 3.9) ---------------------------------
# One standalone ZooKeeper per such cluster, from the release's own classpath
# (Kafka's POM brings the ZooKeeper it was built with), on the port a KRaft
# controller would take. A broker restart leaves it running; down stops it.

zk_dir() { echo "$RUN_DIR/$1/zookeeper"; }
zk_pidfile() { echo "$(zk_dir "$1")/zookeeper.pid"; }
zk_marker() { echo "$(zk_dir "$1")/zookeeper.properties"; }
zk_live_pid() { live_pid "$(zk_pidfile "$1")" "$(zk_marker "$1")"; }
zk_port() { echo $(($(kafka_port "$1") + 1)); }

zk_start() {
  local cluster=$1 dir
  dir=$(zk_dir "$cluster")
  mkdir -p "$dir/data"
  cat >"$(zk_marker "$cluster")" <<EOF
# Written by infra/local for the local "$cluster" cluster; rewritten on every start.
dataDir=$dir/data
clientPortAddress=127.0.0.1
clientPort=$(zk_port "$cluster")
maxClientCnxns=0
admin.enableServer=false
EOF
  log "zookeeper $cluster: starting on 127.0.0.1:$(zk_port "$cluster")"
  kafka_cmd "$cluster" -Xmx128m
  launch "$(zk_pidfile "$cluster")" "$dir/stdout.log" \
    "${KAFKA_CMD[@]/#-Dferry.kafka.log=*/-Dferry.kafka.log=$dir/zookeeper.log}" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$(zk_marker "$cluster")"
}

zk_wait() {
  local cluster=$1 deadline=$((SECONDS + READY_TIMEOUT))
  until port_open "$(zk_port "$cluster")"; do
    if ! zk_live_pid "$cluster" >/dev/null || ((SECONDS >= deadline)); then
      show_log "$(zk_dir "$cluster")/stdout.log"
      show_kafka_log "$(zk_dir "$cluster")/zookeeper.log"
      die "zookeeper $cluster did not come up on 127.0.0.1:$(zk_port "$cluster")"
    fi
    sleep 0.2
  done
}

# Quiet when this cluster never ran ZooKeeper.
zk_stop() {
  [[ -f $(zk_pidfile "$1") ]] || return 0
  stop_service "zookeeper $1" "$(zk_pidfile "$1")" "$(zk_marker "$1")"
}
