# shellcheck shell=bash disable=SC2034 # globals are read by the scripts sourcing this
# Shared by infra/local/up, down and broker (sourced, not run): where things
# live, and how the local services are installed, started, checked and stopped.
#
# Layout: downloads under <repo>/.cache (venv, Kafka jars), runtime state
# under <repo>/.run/<service> (data, logs, pid file). Ports can be moved with
# FERRY_SOURCE_PORT, FERRY_TARGET_PORT (controller = port + 1),
# FERRY_PAIR_PORT (the two-broker cluster, see infra/local/pair) and
# FERRY_MOTO_PORT; export the same values for every script of one stack.

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LOCAL_DIR/../.." && pwd)
CACHE_DIR="$REPO_ROOT/.cache"
RUN_DIR="$REPO_ROOT/.run"
STACK_ENV="$LOCAL_DIR/stack.env"

VENV="$CACHE_DIR/venv"
PYTHON=${FERRY_PYTHON:-python3}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# The POM is the one place that names the Kafka release.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$LOCAL_DIR/kafka/pom.xml")
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_HEAP=${FERRY_KAFKA_HEAP:--Xmx512m}
# The source runs SOURCE_KAFKA_VERSION when set, for compatibility runs
# (infra/local/compat): a migration starts from whatever Kafka the customer
# has. The target runs TARGET_KAFKA_VERSION when set, 3.9 or later (its
# authorizer is KRaft's): an MSK cluster's release is the customer's choice
# too, and before 4.1 a produce names topics, not topic ids. Kafka 2.x and 3.x
# lines get their classpath from kafka/pom-3.x.xml (log4j 1), later ones from
# kafka/pom.xml, each under .cache/kafka-<version>. Releases before 3.9 run
# in ZooKeeper mode (ZooKeeper from the same classpath), 3.9 on in KRaft.
SOURCE_VERSION=${SOURCE_KAFKA_VERSION:-$KAFKA_VERSION}
TARGET_VERSION=${TARGET_KAFKA_VERSION:-$KAFKA_VERSION}

SOURCE_PORT=${FERRY_SOURCE_PORT:-19092}
TARGET_PORT=${FERRY_TARGET_PORT:-29092}
# "pair": a cluster of two brokers, for leadership moves (infra/local/pair):
# node 1 is broker and controller on PAIR_PORT (controller PAIR_PORT + 1),
# node 2 ("pair2") a broker only on PAIR_PORT + 2, node 3 ("pair3") another on
# PAIR_PORT + 3.
PAIR_PORT=${FERRY_PAIR_PORT:-14092}
MOTO_PORT=${FERRY_MOTO_PORT:-5000}
MOTO_DIR="$RUN_DIR/moto"
MOTO_URL="http://127.0.0.1:$MOTO_PORT"

# The source cluster also listens for SASL_SSL (SCRAM over TLS, private CA),
# as MSK Replicator reaches a self-managed source: certificates under
# .run/pki (pki_ensure), advertised as localhost, the broker certificate's
# only name. A second SASL_SSL listener serves an expired certificate.
SOURCE_SASL_SSL_PORT=$((SOURCE_PORT + 2))
SOURCE_EXPIRED_PORT=$((SOURCE_PORT + 3))
PKI_DIR="$RUN_DIR/pki"
# What clients trust: root and intermediate CA, as pasted into the
# `certificate` field of a Secrets Manager secret.
PKI_CA_CHAIN="$PKI_DIR/ca-chain.pem"
# A CA that signed nothing the brokers serve: trusting it alone must fail.
PKI_OTHER_CA="$PKI_DIR/other-ca.pem"
# Kafka PEM keystores: unencrypted PKCS#8 key, then the chain it serves.
PKI_BROKER_KEYSTORE="$PKI_DIR/broker-keystore.pem"
PKI_EXPIRED_KEYSTORE="$PKI_DIR/expired-broker-keystore.pem"
# Kafka before 3.x reads a PEM key store only with an encrypted key: the
# same keys, encrypted with this local-only password (pki_encrypted_keystore).
PKI_KEY_PASSWORD=ferry-local-keystore
# The target also listens for MSK IAM as Amazon MSK serves it (SASL
# OAUTHBEARER over TLS, its port 9098 there): a token is a SigV4-presigned
# kafka-cluster:Connect URL, checked by our own validator
# (msk-iam/FerryMskIamValidator.java, compiled by msk_iam_ensure into
# .run/msk-iam and put on the target's classpath). IAM honours a token
# until it expires, as MSK does; IAM_SHORT honours one for
# MSK_IAM_SHORT_TOKEN_S seconds after signing, so a test sees sessions end
# and clients re-authenticate with fresh tokens within a minute. Same broker
# certificate (localhost, the private CA) as the source's SASL_SSL listener.
TARGET_IAM_PORT=$((TARGET_PORT + 2))
TARGET_IAM_SHORT_PORT=$((TARGET_PORT + 3))
MSK_IAM_REGION=us-east-1
MSK_IAM_SHORT_TOKEN_S=20
# Access keys the listeners know ("<key id>|<secret key>|<principal>[|<session
# token>]"): the stack's own credentials (stack.env's AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, what Ferry signs with) and temporary credentials
# as a Lambda role has them (a session token, with the characters base64
# brings), both super users on the target; and a reader with no grant, for
# ACL tests. Local-only keys.
MSK_IAM_FERRY_PRINCIPAL=arn:aws:iam::123456789012:user/ferry
MSK_IAM_TEMP_KEY=ASIAFERRYLOCAL000001
MSK_IAM_TEMP_SECRET=ferry-temporary-secret/key+1
MSK_IAM_TEMP_TOKEN='IQoJb3JpZ2luX2VjEferry/local+session/token=='
MSK_IAM_TEMP_PRINCIPAL=arn:aws:sts::123456789012:assumed-role/ferry-replicate/ferry-local
MSK_IAM_READER_KEY=reader
MSK_IAM_READER_SECRET=reader-secret
MSK_IAM_READER_PRINCIPAL=arn:aws:iam::123456789012:user/reader
MSK_IAM_IDENTITIES="testing|testing|$MSK_IAM_FERRY_PRINCIPAL $MSK_IAM_TEMP_KEY|$MSK_IAM_TEMP_SECRET|$MSK_IAM_TEMP_PRINCIPAL|$MSK_IAM_TEMP_TOKEN $MSK_IAM_READER_KEY|$MSK_IAM_READER_SECRET|$MSK_IAM_READER_PRINCIPAL"
MSK_IAM_SOURCE_DIR="$LOCAL_DIR/msk-iam"
MSK_IAM_CLASSES="$RUN_DIR/msk-iam/classes"
# More identities, read again by the validator whenever the file changes:
# the rehearsal registers its roles' credentials there (tests/e2e/support/iam_rehearsal.py).
MSK_IAM_IDENTITIES_FILE="$RUN_DIR/msk-iam/identities"
# Principals whose requests on the IAM listeners are authorized as MSK does,
# by their IAM policy (FerryMskIamAuthorizer; the rehearsal registers its roles).
MSK_IAM_AUTHZ_FILE="$RUN_DIR/msk-iam/authorize"
# The replicator's SCRAM user on the source: both mechanisms, a super user.
# Like every password here, local-only.
SOURCE_SCRAM_USER=ferry
SOURCE_SCRAM_PASSWORD=ferry-secret
# The other SCRAM users of both clusters ("MECHANISM NAME PASSWORD"), local-
# only principals for ACL tests: given at format time (KRaft), and again on
# the source by infra/local/up, which a ZooKeeper-mode source needs.
LOCAL_SCRAM_USERS=("SCRAM-SHA-512 admin admin-secret" "SCRAM-SHA-256 alice alice-secret" "SCRAM-SHA-512 bob bob-secret")

# Seconds a service may take to answer after it was started.
READY_TIMEOUT=${FERRY_READY_TIMEOUT:-120}
# Seconds between SIGTERM and SIGKILL when stopping.
STOP_GRACE=${FERRY_STOP_GRACE:-30}

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# One script at a time per checkout: up, down and broker all take this lock.
# Started services must not inherit fd 9, or they would hold it for ever.
take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock -w 600 9 || die "another infra/local script still holds $RUN_DIR/.lock"
}

# --- processes -------------------------------------------------------------

# Prints the pid recorded in pid file $1 when that process is alive and its
# command line contains $2 (a recycled pid is not ours); fails otherwise.
live_pid() {
  local file=$1 marker=$2 pid cmdline
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # Empty for a zombie; missing once the process is gone.
  cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
  [[ $cmdline == *"$marker"* ]] || return 1
  echo "$pid"
}

# launch PIDFILE OUTFILE CMD...: runs CMD in its own session, detached from
# this script (survives its exit and the terminal's signals), output appended
# to OUTFILE; returns once PIDFILE holds the new pid.
launch() {
  local pidfile=$1 out=$2 i
  shift 2
  rm -f "$pidfile"
  # The inner shell records its own pid, then becomes CMD (exec keeps the pid).
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid nohup bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$out" 2>&1 9>&- &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  die "no pid file $pidfile after starting $1"
}

# stop_service NAME PIDFILE MARKER: SIGTERM, up to STOP_GRACE seconds, SIGKILL.
# Sets STOPPED_CLEANLY=true when it stopped the process without SIGKILL.
stop_service() {
  local name=$1 pidfile=$2 marker=$3 pid i
  STOPPED_CLEANLY=false
  if ! pid=$(live_pid "$pidfile" "$marker"); then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  log "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    live_pid "$pidfile" "$marker" >/dev/null || break
    sleep 0.1
  done
  if live_pid "$pidfile" "$marker" >/dev/null; then
    log "$name: still running after ${STOP_GRACE}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      live_pid "$pidfile" "$marker" >/dev/null || break
      sleep 0.1
    done
  else
    STOPPED_CLEANLY=true
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c ": <>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

show_log() {
  local file=$1
  [[ -s $file ]] || return 0
  log "last lines of $file:"
  tail -n 30 "$file" >&2
}

# A dying broker can log its fatal error well before its last lines (another
# thread still printing its config), so show the errors, then the end.
show_kafka_log() {
  local file=$1
  [[ -s $file ]] || return 0
  log "errors in $file:"
  grep -E '^\[[^]]*\] (ERROR|FATAL) |^Caused by: ' "$file" | tail -n 20 >&2 || true
  log "last lines of $file:"
  tail -n 10 "$file" >&2
}

# --- the services, one file each --------------------------------------------

for part in downloads pki msk-iam kafka zookeeper tansu moto; do
  # shellcheck source=/dev/null
  . "$LOCAL_DIR/services/$part.sh"
done
