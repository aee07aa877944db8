# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# Kafka: part of infra/local/services.sh, which sources it.

# --- Kafka -------------------------------------------------------------------

kafka_port() {
  case $1 in
    source) echo "$SOURCE_PORT" ;;
    target) echo "$TARGET_PORT" ;;
    pair) echo "$PAIR_PORT" ;;
    pair2) echo $((PAIR_PORT + 2)) ;;
    pair3) echo $((PAIR_PORT + 3)) ;;
    *) die "unknown cluster '$1' (expected source, target, pair, pair2 or pair3)" ;;
  esac
}
kafka_bootstrap() { echo "127.0.0.1:$(kafka_port "$1")"; }
kafka_dir() { echo "$RUN_DIR/$1"; }
kafka_pidfile() { echo "$RUN_DIR/$1/kafka.pid"; }
# The properties path is unique per checkout and cluster: it identifies our JVM.
kafka_marker() { echo "$RUN_DIR/$1/server.properties"; }
kafka_log() { echo "$RUN_DIR/$1/kafka.log"; }
kafka_live_pid() { live_pid "$(kafka_pidfile "$1")" "$(kafka_marker "$1")"; }
# The Kafka release cluster $1 runs, and where its jars are.
kafka_version() {
  case $1 in
    source) echo "$SOURCE_VERSION" ;;
    target) echo "$TARGET_VERSION" ;;
    *) echo "$KAFKA_VERSION" ;;
  esac
}
kafka_home() { echo "$CACHE_DIR/kafka-$(kafka_version "$1")"; }
kafka_libs() { echo "$(kafka_home "$1")/libs"; }
# Written once the data dir is formatted: the release that formatted it.
kafka_version_file() { echo "$RUN_DIR/$1/kafka.version"; }
# Class-data sharing archive: a broker's first clean stop dumps the classes it
# loaded; later starts map them and answer in ~5 s instead of ~11 s on two
# cores. An archive fits one set of jars (kept beside them, per release, and
# dropped by ensure_kafka_libs and kafka_version_libs) and one JVM build
# (keyed by the java binary's mtime); a misfit is silently unused.
kafka_cds() {
  local jvm
  jvm=$(readlink -f "$(command -v "$JAVA")")
  echo "$(kafka_home "$1")/cds/jvm-$(stat -c %Y "$jvm")/$1.jsa"
}

# kafka_config CLUSTER: prints the server.properties of a single-node KRaft
# cluster in combined mode (broker and controller in one JVM), or, for a
# release before 3.9, of one broker with its own ZooKeeper on the port the
# controller would have.
kafka_config() {
  local cluster=$1 dir port controller listeners advertised protocols zookeeper=false roles=broker,controller node=1
  dir=$(kafka_dir "$cluster")
  port=$(kafka_port "$cluster")
  controller=$((port + 1))
  kafka_on_zookeeper "$cluster" && zookeeper=true
  listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller"
  protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ $cluster == pair2 ]]; then
    # The pair's second broker: no controller of its own, node 1's quorum.
    roles=broker node=2 controller=$((PAIR_PORT + 1))
    listeners="PLAINTEXT://127.0.0.1:$port"
  fi
  if [[ $cluster == pair3 ]]; then
    # A third broker of the pair (broker only), for two unclean elections
    # with the controller up (test_truncation).
    roles=broker node=3 controller=$((PAIR_PORT + 1))
    listeners="PLAINTEXT://127.0.0.1:$port"
  fi
  if $zookeeper; then
    listeners="PLAINTEXT://127.0.0.1:$port"
    protocols="PLAINTEXT:PLAINTEXT"
  fi
  advertised=$listeners
  if [[ $cluster == source ]]; then
    # Bound to 127.0.0.1 but advertised as localhost: the only name on the
    # certificates, which clients verify.
    listeners+=",SASL_SSL://127.0.0.1:$SOURCE_SASL_SSL_PORT,EXPIRED://127.0.0.1:$SOURCE_EXPIRED_PORT"
    advertised+=",SASL_SSL://localhost:$SOURCE_SASL_SSL_PORT,EXPIRED://localhost:$SOURCE_EXPIRED_PORT"
    protocols+=",SASL_SSL:SASL_SSL,EXPIRED:SASL_SSL"
  fi
  if [[ $cluster == target ]]; then
    listeners+=",IAM://127.0.0.1:$TARGET_IAM_PORT,IAM_SHORT://127.0.0.1:$TARGET_IAM_SHORT_PORT"
    advertised+=",IAM://localhost:$TARGET_IAM_PORT,IAM_SHORT://localhost:$TARGET_IAM_SHORT_PORT"
    protocols+=",IAM:SASL_SSL,IAM_SHORT:SASL_SSL"
  fi
  echo "# Written by infra/local for the local \"$cluster\" cluster; rewritten on every start."
  if $zookeeper; then
    cat <<EOF
broker.id=1
zookeeper.connect=127.0.0.1:$controller
EOF
  else
    cat <<EOF
process.roles=$roles
node.id=$node
controller.quorum.bootstrap.servers=127.0.0.1:$controller
controller.listener.names=CONTROLLER
EOF
  fi
  cat <<EOF
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
EOF
  # Share groups (KIP-932) and their coordinator came with Kafka 4; 3.9
  # would only warn that these are unknown.
  if (($(kafka_major "$(kafka_version "$cluster")") >= 4)); then
    cat <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  fi
  if [[ $cluster == pair* ]]; then
    # Every topic on both brokers (internal ones too: these lines override
    # the ones above), and leadership handed back to the preferred replica
    # within seconds of its return (Kafka checks every 300 s by default).
    cat <<EOF
default.replication.factor=2
offsets.topic.replication.factor=2
transaction.state.log.replication.factor=2
leader.imbalance.check.interval.seconds=5
EOF
  fi
  cat <<EOF
group.initial.rebalance.delay.ms=0
# ACLs are enforced (and copied by Ferry). Everything here connects as
# User:ANONYMOUS over PLAINTEXT, so that principal is a super user, as is
# admin (and on the source the replicator's SCRAM user); the other SCRAM
# users are principals for ACLs. With ZooKeeper, ACLs live there.
EOF
  if $zookeeper; then
    echo 'authorizer.class.name=kafka.security.authorizer.AclAuthorizer'
  elif [[ $cluster == target ]]; then
    # Kafka's StandardAuthorizer, but principals registered in the file are
    # authorized on the IAM listeners as MSK does, by their IAM policy.
    echo 'authorizer.class.name=FerryMskIamAuthorizer'
    echo "ferry.msk.iam.authz.file=$MSK_IAM_AUTHZ_FILE"
  else
    echo 'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer'
  fi
  if [[ $cluster == target ]]; then
    # The principal of an MSK IAM login is the IAM identity: Ferry's (both
    # keys) are super users here, the reader has no grant. The validator's classes
    # come from .run/msk-iam (kafka_cmd).
    cat <<EOF
super.users=User:admin;User:ANONYMOUS;User:$MSK_IAM_FERRY_PRINCIPAL;User:$MSK_IAM_TEMP_PRINCIPAL
# MSK IAM: OAUTHBEARER over TLS, tokens checked by FerryMskIamValidator.
sasl.enabled.mechanisms=OAUTHBEARER
listener.name.iam.oauthbearer.sasl.jaas.config=$(msk_iam_jaas)
listener.name.iam.oauthbearer.sasl.server.callback.handler.class=FerryMskIamValidator
listener.name.iam.ssl.keystore.type=PEM
listener.name.iam.ssl.keystore.location=$PKI_BROKER_KEYSTORE
listener.name.iam.ssl.client.auth=none
listener.name.iam_short.oauthbearer.sasl.jaas.config=$(msk_iam_jaas "maxTokenAgeSeconds=\"$MSK_IAM_SHORT_TOKEN_S\"")
listener.name.iam_short.oauthbearer.sasl.server.callback.handler.class=FerryMskIamValidator
listener.name.iam_short.ssl.keystore.type=PEM
listener.name.iam_short.ssl.keystore.location=$PKI_BROKER_KEYSTORE
listener.name.iam_short.ssl.client.auth=none
EOF
    return 0
  fi
  if [[ $cluster != source ]]; then
    echo 'super.users=User:admin;User:ANONYMOUS'
    return 0
  fi
  local broker_keystore=$PKI_BROKER_KEYSTORE expired_keystore=$PKI_EXPIRED_KEYSTORE key_password=""
  if kafka_encrypted_key "$cluster"; then
    broker_keystore=$(pki_encrypted_path "$PKI_BROKER_KEYSTORE")
    expired_keystore=$(pki_encrypted_path "$PKI_EXPIRED_KEYSTORE")
    key_password=$PKI_KEY_PASSWORD
  fi
  # The listener names are fixed, so the same config serves any port.
  cat <<EOF
super.users=User:admin;User:ANONYMOUS;User:$SOURCE_SCRAM_USER
# SASL_SSL as MSK Replicator reaches a self-managed source: SCRAM over TLS,
# the server certificate from a private CA (.run/pki), no client certificate.
# EXPIRED serves an expired certificate of the same CA, for the clients' test.
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$broker_keystore
listener.name.sasl_ssl.ssl.client.auth=none
EOF
  [[ -z $key_password ]] || echo "listener.name.sasl_ssl.ssl.key.password=$key_password"
  cat <<EOF
# Sessions on this listener last 20 s: clients must re-authenticate in band
# (KIP-368), which is how a rotated password reaches a running client.
listener.name.sasl_ssl.connections.max.reauth.ms=20000
listener.name.expired.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.expired.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.expired.ssl.keystore.type=PEM
listener.name.expired.ssl.keystore.location=$expired_keystore
listener.name.expired.ssl.client.auth=none
EOF
  [[ -z $key_password ]] || echo "listener.name.expired.ssl.key.password=$key_password"
  return 0
}

# True when the running broker of CLUSTER was started with the configuration
# kafka_config prints now (comments aside); false when that changed since,
# e.g. after a git pull that added a listener.
kafka_config_current() {
  local file
  file=$(kafka_marker "$1")
  [[ -f $file ]] && diff -q <(grep -v '^#' "$file") <(kafka_config "$1" | grep -v '^#') >/dev/null
}

# Dies when the data dir of CLUSTER was formatted for another controller port.
# The metadata log records the controller's address (the voter set) at format
# time, and nothing else about listeners: that one must stay, while other
# listeners and ports may come and go. The server.properties the broker last
# ran with tells which address the log holds.
kafka_check_formatted() {
  local cluster=$1 dir controller
  kafka_on_zookeeper "$cluster" && return 0
  [[ $cluster == pair2 || $cluster == pair3 ]] && return 0 # no controller of its own
  dir=$(kafka_dir "$cluster")
  controller=$(($(kafka_port "$cluster") + 1))
  if [[ -f $dir/data/meta.properties ]] &&
    ! grep -qE "^listeners=(.*,)?CONTROLLER://127\.0\.0\.1:$controller(,|\$)" "$dir/server.properties"; then
    die "kafka $cluster: $dir was formatted for another controller port; run infra/local/down --purge to move it to $controller"
  fi
}

# Dies when the data dir of CLUSTER was formatted by another Kafka release
# than the one it would start with now: an older release cannot read a newer
# one's metadata log, and a compatibility run must not quietly test an
# upgraded cluster. A data dir without a record was formatted before
# releases were recorded, by the POM's.
kafka_check_version() {
  local cluster=$1 dir want had
  dir=$(kafka_dir "$cluster")
  want=$(kafka_version "$cluster")
  [[ -f $dir/data/meta.properties ]] || return 0
  had=$KAFKA_VERSION
  if [[ -s $(kafka_version_file "$cluster") ]]; then
    had=$(<"$(kafka_version_file "$cluster")")
  fi
  [[ $had == "$want" ]] && return 0
  local keep=""
  [[ $cluster == source || $cluster == target ]] && keep=", or set ${cluster^^}_KAFKA_VERSION=$had to keep it"
  die "kafka $cluster: $dir was formatted by Kafka $had, not $want; run infra/local/down --purge to start it afresh on $want$keep"
}

# For down and broker, which act on the clusters as they are: unless
# SOURCE_KAFKA_VERSION says otherwise, the source stays on the release that
# formatted it (a compatibility run's). infra/local/up does not follow it:
# there an unset variable means the POM's release, and a mismatch is refused.
kafka_follow_recorded_version() {
  if [[ -z ${SOURCE_KAFKA_VERSION:-} && -s $(kafka_version_file source) ]]; then
    SOURCE_VERSION=$(<"$(kafka_version_file source)")
  fi
  if [[ -z ${TARGET_KAFKA_VERSION:-} && -s $(kafka_version_file target) ]]; then
    TARGET_VERSION=$(<"$(kafka_version_file target)")
  fi
}

kafka_write_config() {
  local dir
  dir=$(kafka_dir "$1")
  kafka_check_formatted "$1"
  kafka_check_version "$1"
  if [[ $1 == source || $1 == target ]] && [[ ! -s $PKI_BROKER_KEYSTORE ]]; then
    die "kafka $1: no $PKI_BROKER_KEYSTORE for its TLS listeners; run infra/local/up"
  fi
  if [[ $1 == target && ! -s $MSK_IAM_CLASSES/FerryMskIamValidator.class ]]; then
    die "kafka target: no MSK IAM validator in $MSK_IAM_CLASSES; run infra/local/up"
  fi
  if kafka_encrypted_key "$1"; then
    pki_encrypted_keystore "$PKI_BROKER_KEYSTORE"
    pki_encrypted_keystore "$PKI_EXPIRED_KEYSTORE"
  fi
  mkdir -p "$dir/data"
  kafka_config "$1" >"$dir/server.properties"
}

# Sets KAFKA_CMD to the java command line, up to the main class, for cluster
# $1 with heap option $2. A plain array: launch runs it in a fresh shell.
kafka_cmd() {
  local logging=-Dlog4j2.configurationFile="$LOCAL_DIR/kafka/log4j2.xml"
  # Kafka 2.x and 3.x log through log4j 1 (reload4j): same file, same format.
  if (($(kafka_major "$(kafka_version "$1")") <= 3)); then
    logging=-Dlog4j.configuration="file:$LOCAL_DIR/kafka/log4j.properties"
  fi
  # The target's MSK IAM listeners load their validator from .run/msk-iam.
  local classpath
  classpath="$(kafka_libs "$1")/*"
  [[ $1 == target ]] && classpath+=":$MSK_IAM_CLASSES"
  KAFKA_CMD=("$JAVA" "$2" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    "$logging"
    -Dferry.kafka.log="$(kafka_log "$1")"
    -cp "$classpath")
}

# Formats the data dir once; meta.properties marks a formatted log dir.
kafka_format() {
  local cluster=$1 dir cluster_id user mechanism name password scram=()
  dir=$(kafka_dir "$cluster")
  [[ -f $dir/data/meta.properties ]] && return 0
  # With ZooKeeper the broker writes meta.properties itself at its first
  # start, and SCRAM users are added later (infra/local/up).
  if kafka_on_zookeeper "$cluster"; then
    kafka_version "$cluster" >"$(kafka_version_file "$cluster")"
    return 0
  fi
  # As Kafka's Uuid.randomUuid: never one starting with "-", which
  # StorageTool's argument parser takes for an option (1 format in 64 failed).
  cluster_id=$("$VENV/bin/python" -c '
import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(i)')
  local quorum=(--standalone)
  if [[ $cluster == pair2 || $cluster == pair3 ]]; then
    # A broker joins the cluster its controller formatted.
    [[ -f $(kafka_dir pair)/data/meta.properties ]] || die "kafka $cluster: format pair first"
    cluster_id=$(sed -n 's/^cluster.id=//p' "$(kafka_dir pair)/data/meta.properties")
    quorum=()
  fi
  log "kafka $cluster: formatting $dir/data for Kafka $(kafka_version "$cluster") (cluster id $cluster_id)"
  kafka_cmd "$cluster" -Xmx256m
  if [[ $cluster != pair2 && $cluster != pair3 ]]; then
    for user in "${LOCAL_SCRAM_USERS[@]}"; do
      read -r mechanism name password <<<"$user"
      scram+=(--add-scram "$mechanism=[name=$name,password=$password]")
    done
  fi
  if ! "${KAFKA_CMD[@]}" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$dir/server.properties" "${quorum[@]}" "${scram[@]}" >>"$dir/format.log" 2>&1; then
    show_log "$dir/format.log"
    show_kafka_log "$(kafka_log "$cluster")"
    die "kafka $cluster: formatting the storage failed"
  fi
  kafka_version "$cluster" >"$(kafka_version_file "$cluster")"
}

kafka_start() {
  local cluster=$1 dir cds cds_option
  dir=$(kafka_dir "$cluster")
  kafka_write_config "$cluster"
  kafka_format "$cluster"
  if kafka_on_zookeeper "$cluster"; then
    zk_live_pid "$cluster" >/dev/null || zk_start "$cluster"
    zk_wait "$cluster"
  fi
  log "kafka $cluster: starting Kafka $(kafka_version "$cluster") on $(kafka_bootstrap "$cluster")"
  # One log per run, and the run before it, so errors shown are this run's.
  if [[ -f $(kafka_log "$cluster") ]]; then
    mv -f "$(kafka_log "$cluster")" "$dir/kafka.previous.log"
  fi
  kafka_cmd "$cluster" "$KAFKA_HEAP"
  cds=$(kafka_cds "$cluster")
  if [[ -f $cds ]]; then
    cds_option=-XX:SharedArchiveFile=$cds
  else
    # Dumped at exit under another name: kafka_stop keeps it only when whole.
    mkdir -p "$(dirname "$cds")"
    rm -f "$cds.partial"
    cds_option=-XX:ArchiveClassesAtExit=$cds.partial
  fi
  launch "$(kafka_pidfile "$cluster")" "$dir/stdout.log" \
    "${KAFKA_CMD[@]}" "$cds_option" '-Xlog:cds*=error' kafka.Kafka "$dir/server.properties"
}

kafka_stop() {
  local cds
  cds=$(kafka_cds "$1")
  stop_service "kafka $1" "$(kafka_pidfile "$1")" "$(kafka_marker "$1")"
  if $STOPPED_CLEANLY && [[ -s $cds.partial ]]; then
    mv "$cds.partial" "$cds"
  fi
}

# Stops CLUSTER (and a ZooKeeper of its own) and deletes its data: the next
# kafka_start formats it afresh, on the same configuration and release.
kafka_wipe() {
  local cluster=$1
  kafka_stop "$cluster"
  zk_stop "$cluster"
  rm -rf "$(kafka_dir "$cluster")/data" "$(kafka_version_file "$cluster")" "$(zk_dir "$cluster")/data"
}

# kafka_wait CLUSTER...: returns once every named cluster answers a metadata
# request; on failure shows the logs of those that did not, and exits.
kafka_wait() {
  local args=() cluster failed pid
  for cluster in "$@"; do
    pid=$(kafka_live_pid "$cluster") || pid=0
    args+=(--broker "$(kafka_bootstrap "$cluster")" "$pid")
  done
  if failed=$("$VENV/bin/python" "$LOCAL_DIR/wait_kafka.py" --timeout "$READY_TIMEOUT" "${args[@]}"); then
    return 0
  fi
  for cluster in "$@"; do
    if grep -qxF "$(kafka_bootstrap "$cluster")" <<<"$failed"; then
      show_log "$(kafka_dir "$cluster")/stdout.log"
      show_kafka_log "$(kafka_log "$cluster")"
    fi
  done
  die "Kafka did not come up: $(tr '\n' ' ' <<<"$failed")"
}
