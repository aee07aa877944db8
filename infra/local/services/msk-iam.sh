# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# MSK IAM validator: part of infra/local/services.sh, which sources it.

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
