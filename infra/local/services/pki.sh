# shellcheck shell=bash disable=SC2034 # sourced by infra/local/services.sh
# PKI: part of infra/local/services.sh, which sources it.

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
