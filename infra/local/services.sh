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
# The target always runs the POM's release. The source runs
# SOURCE_KAFKA_VERSION when set, for compatibility runs (infra/local/compat):
# a migration starts from whatever Kafka the customer has. Kafka 2.x and 3.x
# lines get their classpath from kafka/pom-3.x.xml (log4j 1), later ones from
# kafka/pom.xml, each under .cache/kafka-<version>. Releases before 3.9 run
# in ZooKeeper mode (ZooKeeper from the same classpath), 3.9 on in KRaft.
SOURCE_VERSION=${SOURCE_KAFKA_VERSION:-$KAFKA_VERSION}

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
# the rehearsal registers its roles' credentials there (tests/e2e/iam_rehearsal.py).
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

# --- downloads ---------------------------------------------------------------

# Stamp files hold a hash of what was installed; a different hash reinstalls.
stamp_matches() { [[ -f $1 && $(<"$1") == "$2" ]]; }

ensure_venv() {
  local stamp="$VENV/.ferry-requirements.sha256" want
  want=$(sha256sum <"$LOCAL_DIR/requirements.txt" | cut -d' ' -f1)
  if stamp_matches "$stamp" "$want" && [[ -x $VENV/bin/python ]]; then
    return 0
  fi
  command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH (set FERRY_PYTHON)"
  log "venv: installing infra/local/requirements.txt into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LOCAL_DIR/requirements.txt" \
    || die "pip install failed; the venv is left without a stamp and will be rebuilt"
  echo "$want" >"$stamp"
}

# Offline validators the tests run: asl-validator (npm) and the SAM CLI (its
# own venv, since its pins differ from moto's).
ensure_tools() {
  local node_dir="$CACHE_DIR/node" sam_venv="$CACHE_DIR/sam-venv" stamp want
  stamp="$node_dir/.ferry-package.sha256"
  want=$(sha256sum <"$LOCAL_DIR/tools/package.json" | cut -d' ' -f1)
  if ! stamp_matches "$stamp" "$want" || [[ ! -x $node_dir/node_modules/.bin/asl-validator ]]; then
    command -v npm >/dev/null || die "no npm on PATH"
    log "tools: installing asl-validator into $node_dir"
    rm -rf "$node_dir" && mkdir -p "$node_dir"
    cp "$LOCAL_DIR/tools/package.json" "$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1) \
      || { tail -n 20 "$node_dir/npm.log" >&2; die "npm install failed"; }
    echo "$want" >"$stamp"
  fi
  stamp="$sam_venv/.ferry-requirements.sha256"
  want=$(sha256sum <"$LOCAL_DIR/tools/sam-requirements.txt" | cut -d' ' -f1)
  if ! stamp_matches "$stamp" "$want" || [[ ! -x $sam_venv/bin/sam ]]; then
    log "tools: installing the SAM CLI into $sam_venv"
    rm -rf "$sam_venv"
    "$PYTHON" -m venv "$sam_venv"
    "$sam_venv/bin/pip" install --quiet --disable-pip-version-check -r "$LOCAL_DIR/tools/sam-requirements.txt" \
      || die "pip install of the SAM CLI failed"
    echo "$want" >"$stamp"
  fi
}

ensure_kafka_libs() {
  local stamp="$KAFKA_HOME/.ferry-pom.sha256" want
  [[ -n $KAFKA_VERSION ]] || die "no <kafka.version> in $LOCAL_DIR/kafka/pom.xml"
  want=$(sha256sum <"$LOCAL_DIR/kafka/pom.xml" | cut -d' ' -f1)
  if stamp_matches "$stamp" "$want" && [[ -d $KAFKA_LIBS ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "no mvn on PATH"
  log "kafka: gathering the Kafka $KAFKA_VERSION classpath into $KAFKA_LIBS"
  mkdir -p "$KAFKA_HOME"
  rm -rf "$KAFKA_LIBS.tmp"
  if ! mvn -q -B -f "$LOCAL_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS.tmp" >"$KAFKA_HOME/mvn.log" 2>&1; then
    show_log "$KAFKA_HOME/mvn.log"
    die "mvn dependency:copy-dependencies failed"
  fi
  rm -rf "$KAFKA_LIBS" "$KAFKA_HOME/cds"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  echo "$want" >"$stamp"
}

# kafka_version_check VERSION: dies unless this stack can run VERSION: 2.8
# or later, the oldest source MSK Replicator accepts.
kafka_version_check() {
  local version=$1
  [[ $version =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "Kafka version '$version' is not MAJOR.MINOR.PATCH"
  if ((BASH_REMATCH[1] < 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] < 8))); then
    die "Kafka $version: the local stack runs 2.8 or later (the oldest source MSK Replicator accepts)"
  fi
}

# True when CLUSTER runs with ZooKeeper here: a release before 3.9, whose
# KRaft controller is the first to format with --standalone (KIP-853).
kafka_on_zookeeper() {
  [[ $(kafka_version "$1") =~ ^([0-9]+)\.([0-9]+)\. ]] || return 1
  ((BASH_REMATCH[1] < 3 || (BASH_REMATCH[1] == 3 && BASH_REMATCH[2] < 9)))
}

# True when CLUSTER is a source whose release reads a PEM key store only with
# an encrypted key (before 3.0): it serves pki_encrypted_keystore's copies.
kafka_encrypted_key() {
  [[ $1 == source ]] && (($(kafka_major "$(kafka_version source)") < 3))
}

# kafka_major VERSION: its first number (3 or 4...).
kafka_major() { echo "${1%%.*}"; }

# kafka_version_libs VERSION: gathers the classpath of another Kafka release
# (a compatibility run's source) into .cache/kafka-VERSION/libs, once: the
# stamp holds a hash of the POM used and the version, as for mm2/fetch.
# The POM's own release goes through ensure_kafka_libs, unchanged.
kafka_version_libs() {
  local version=$1 home pom stamp want
  [[ $version == "$KAFKA_VERSION" ]] && return 0
  kafka_version_check "$version"
  home="$CACHE_DIR/kafka-$version"
  if (($(kafka_major "$version") <= 3)); then
    pom="$LOCAL_DIR/kafka/pom-3.x.xml"
  else
    pom="$LOCAL_DIR/kafka/pom.xml"
  fi
  stamp="$home/.ferry-pom.sha256"
  want=$({ cat "$pom"; echo "kafka.version=$version"; } | sha256sum | cut -d' ' -f1)
  if stamp_matches "$stamp" "$want" && [[ -d $home/libs ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "no mvn on PATH"
  log "kafka: gathering the Kafka $version classpath into $home/libs"
  mkdir -p "$home"
  rm -rf "$home/libs.tmp"
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies -Dkafka.version="$version" \
    -DoutputDirectory="$home/libs.tmp" >"$home/mvn.log" 2>&1; then
    show_log "$home/mvn.log"
    die "mvn dependency:copy-dependencies failed for Kafka $version (does Maven Central serve org.apache.kafka:kafka_2.13:$version?)"
  fi
  compgen -G "$home/libs.tmp/kafka_2.13-$version.jar" >/dev/null ||
    die "no kafka_2.13-$version.jar in $home/libs.tmp"
  rm -rf "$home/libs" "$home/cds"
  mv "$home/libs.tmp" "$home/libs"
  echo "$want" >"$stamp"
}

require_installed() {
  [[ -x $VENV/bin/python && -d $KAFKA_LIBS && -d $(kafka_libs source) ]] ||
    die "nothing installed yet: run infra/local/up first"
}

# --- PKI -----------------------------------------------------------------------

# A private CA and broker certificates for the source's SASL_SSL listeners,
# made with openssl once and kept in $PKI_DIR: a root CA, an intermediate CA
# it signed, a broker certificate the intermediate signed (SAN DNS:localhost
# only, so 127.0.0.1 is a hostname mismatch a test can show), the same name
# on a certificate that has already expired, and an unrelated CA. RSA 2048,
# what self-managed clusters most often serve.

# True when certificate $1 exists and stays valid for at least one more day.
pki_cert_valid() { [[ -s $1 ]] && openssl x509 -checkend 86400 -noout -in "$1" >/dev/null 2>&1; }

# pki_issue DIR NAME SUBJECT ISSUER DAYS EXTENSIONS: key DIR/NAME.key and
# certificate DIR/NAME.pem, signed by DIR/ISSUER.{pem,key}, or self-signed
# when ISSUER is "-"; EXTENSIONS are X.509v3 config lines. openssl's messages
# go to DIR/openssl.log. Each step is chained: errexit does not apply here.
pki_issue() {
  local dir=$1 name=$2 subject=$3 issuer=$4 days=$5 extensions=$6 signer
  if [[ $issuer == - ]]; then
    signer=(-signkey "$dir/$name.key")
  else
    signer=(-CA "$dir/$issuer.pem" -CAkey "$dir/$issuer.key")
  fi
  printf '[v3]\n%s\n' "$extensions" >"$dir/$name.ext" &&
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key" 2>>"$dir/openssl.log" &&
    openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>>"$dir/openssl.log" &&
    openssl x509 -req -in "$dir/$name.csr" -days "$days" -sha256 "${signer[@]}" \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$dir/$name.ext" -extensions v3 \
      -out "$dir/$name.pem" 2>>"$dir/openssl.log"
}

# pki_issue_expired DIR NAME SUBJECT ISSUER EXTENSIONS: as pki_issue, but
# valid from 30 days ago until yesterday. `openssl x509 -req` of OpenSSL 3.0
# only counts days from now (-days -1 gives notAfter < notBefore, not an
# expired certificate); `openssl ca` takes both dates.
pki_issue_expired() {
  local dir=$1 name=$2 subject=$3 issuer=$4 extensions=$5
  mkdir -p "$dir/ca-db" &&
    : >"$dir/ca-db/index.txt" &&
    openssl rand -hex 16 >"$dir/ca-db/serial" &&
    printf '%s\n' '[ca]' 'default_ca = local' '[local]' \
      "database = $dir/ca-db/index.txt" "new_certs_dir = $dir/ca-db" "serial = $dir/ca-db/serial" \
      'default_md = sha256' 'policy = any' 'unique_subject = no' \
      '[any]' 'organizationName = optional' 'commonName = supplied' \
      '[v3]' "$extensions" >"$dir/$name.cnf" &&
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key" 2>>"$dir/openssl.log" &&
    openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>>"$dir/openssl.log" &&
    openssl ca -batch -notext -config "$dir/$name.cnf" -cert "$dir/$issuer.pem" -keyfile "$dir/$issuer.key" \
      -startdate "$(date -u -d '30 days ago' +%Y%m%d%H%M%SZ)" -enddate "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)" \
      -extensions v3 -in "$dir/$name.csr" -out "$dir/$name.pem" 2>>"$dir/openssl.log"
}

# Makes $PKI_DIR unless it is whole and no certificate in use expires within
# a day; sets PKI_REGENERATED=true when it made a new set (a broker serving
# the old one must restart). Built aside and moved into place, so an
# interrupted run leaves the old set or none, never half of one.
pki_ensure() {
  local tmp="$PKI_DIR.tmp" file whole=true
  local ca='basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash'
  local intermediate='basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid'
  local server='basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid'
  PKI_REGENERATED=false
  for file in root-ca intermediate-ca broker other-ca; do
    pki_cert_valid "$PKI_DIR/$file.pem" || whole=false
  done
  for file in "$PKI_CA_CHAIN" "$PKI_OTHER_CA" "$PKI_BROKER_KEYSTORE" "$PKI_EXPIRED_KEYSTORE"; do
    [[ -s $file ]] || whole=false
  done
  $whole && return 0
  command -v openssl >/dev/null || die "no openssl on PATH"
  log "pki: making a private CA and broker certificates in $PKI_DIR"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  chmod 700 "$tmp"
  if ! { pki_issue "$tmp" root-ca '/O=Ferry local/CN=Ferry local root CA' - 3650 "$ca" &&
    pki_issue "$tmp" intermediate-ca '/O=Ferry local/CN=Ferry local intermediate CA' root-ca 1825 "$intermediate" &&
    pki_issue "$tmp" broker '/O=Ferry local/CN=localhost' intermediate-ca 825 "$server" &&
    pki_issue_expired "$tmp" expired-broker '/O=Ferry local expired/CN=localhost' intermediate-ca "$server" &&
    pki_issue "$tmp" other-ca '/O=Ferry local other/CN=Ferry local other CA' - 3650 "$ca"; }; then
    show_log "$tmp/openssl.log"
    die "pki: openssl failed to make the certificates in $tmp"
  fi
  cat "$tmp/root-ca.pem" "$tmp/intermediate-ca.pem" >"$tmp/${PKI_CA_CHAIN##*/}"
  # The broker serves its certificate and the intermediate, so a client that
  # trusts only the root can still build the chain.
  cat "$tmp/broker.key" "$tmp/broker.pem" "$tmp/intermediate-ca.pem" >"$tmp/${PKI_BROKER_KEYSTORE##*/}"
  cat "$tmp/expired-broker.key" "$tmp/expired-broker.pem" "$tmp/intermediate-ca.pem" >"$tmp/${PKI_EXPIRED_KEYSTORE##*/}"
  openssl verify -CAfile "$tmp/${PKI_CA_CHAIN##*/}" "$tmp/broker.pem" >/dev/null ||
    die "pki: the new broker certificate does not verify against $tmp/${PKI_CA_CHAIN##*/}"
  rm -rf "$tmp"/*.csr "$tmp"/*.ext "$tmp"/*.cnf "$tmp/ca-db" "$tmp/openssl.log"
  rm -rf "$PKI_DIR"
  mv "$tmp" "$PKI_DIR"
  PKI_REGENERATED=true
}

# pki_encrypted_keystore KEYSTORE: makes the copy of KEYSTORE whose key is
# encrypted with PKI_KEY_PASSWORD, when missing or older than KEYSTORE.
pki_encrypted_path() { echo "${1%.pem}-encrypted.pem"; }
pki_encrypted_keystore() {
  local in=$1 out
  out=$(pki_encrypted_path "$1")
  if [[ ! -s $out || $in -nt $out ]]; then
    { openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -passout "pass:$PKI_KEY_PASSWORD" -in "$in" &&
      sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$in"; } \
      >"$out.tmp" 2>>"$PKI_DIR/openssl.log" || die "pki: openssl failed to encrypt the key of $in"
    mv "$out.tmp" "$out"
  fi
}

# --- MSK IAM validator ---------------------------------------------------------

# Compiles the validator into $MSK_IAM_CLASSES with the machine's javac
# against the target's Kafka jars, unless the classes there were built from
# the same source and jars; sets MSK_IAM_REBUILT=true when it compiled (a
# target running the old classes must restart). Built aside and moved into
# place, so an interrupted run leaves the old classes or none.
msk_iam_ensure() {
  local stamp="$MSK_IAM_CLASSES/.ferry-source.sha256" want tmp="$MSK_IAM_CLASSES.tmp"
  MSK_IAM_REBUILT=false
  want=$({ cat "$MSK_IAM_SOURCE_DIR"/*.java && echo "$KAFKA_VERSION"; } | sha256sum | cut -d' ' -f1)
  if stamp_matches "$stamp" "$want" && [[ -s $MSK_IAM_CLASSES/FerryMskIamValidator.class &&
    -s $MSK_IAM_CLASSES/FerryMskIamAuthorizer.class ]]; then
    return 0
  fi
  command -v javac >/dev/null || die "no javac on PATH (a JDK 17): it compiles the MSK IAM validator"
  log "msk-iam: compiling $MSK_IAM_SOURCE_DIR/*.java into $MSK_IAM_CLASSES"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! javac -nowarn -d "$tmp" -cp "$KAFKA_LIBS/*" "$MSK_IAM_SOURCE_DIR"/*.java >"$tmp/javac.log" 2>&1; then
    show_log "$tmp/javac.log"
    die "msk-iam: javac failed"
  fi
  rm -f "$tmp/javac.log"
  echo "$want" >"$tmp/.ferry-source.sha256"
  rm -rf "$MSK_IAM_CLASSES"
  mv "$tmp" "$MSK_IAM_CLASSES"
  MSK_IAM_REBUILT=true
}

# Prints the JAAS line of an MSK IAM listener, with extra options $1. The
# broker logs itself in on every SASL listener, with Kafka's unsecured
# token unless told otherwise; that token needs a subject, and is never
# sent (brokers talk PLAINTEXT to each other here).
msk_iam_jaas() {
  echo "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\" region=\"$MSK_IAM_REGION\" identities=\"$MSK_IAM_IDENTITIES\" identitiesFile=\"$MSK_IAM_IDENTITIES_FILE\"${1:+ $1};"
}

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
  [[ $cluster == source ]] && keep=", or set SOURCE_KAFKA_VERSION=$had to keep it"
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
