# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# downloads: part of infra/local/services.sh, which sources it.

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
  [[ -x $VENV/bin/python && -d $KAFKA_LIBS && -d $(kafka_libs source) && -d $(kafka_libs target) ]] ||
    die "nothing installed yet: run infra/local/up first"
}
