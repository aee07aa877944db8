//! How Ferry proves who it is to a cluster, and checks who the cluster is:
//! TLS (a private CA chain from Secrets Manager, or the public roots),
//! SASL/SCRAM with credentials from Secrets Manager, and MSK IAM (SASL
//! OAUTHBEARER with a SigV4 token signed with the function's own
//! credentials).
//!
//! Secrets are read when a connection is first made and kept; after a
//! refused login the secret's versions are read again (see `versions`), so
//! a rotated password is picked up without a restart.
//! Nothing here puts a password, token or key into an error, a log line or
//! a `Debug` output.

use std::sync::Arc;

use aws_sdk_secretsmanager::Client as SecretsClient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls;

use super::error::KafkaError;
pub use super::redacted::Redacted;
use super::scram::ScramHash;

mod versions;
pub use versions::{Credentials, Stage};

/// Where the TLS trust comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    /// The public roots (Amazon MSK's certificates chain to them).
    PublicRoots,
    /// The PEM chain under `certificate` in this secret.
    Secret(String),
    /// The `certificate` of the SCRAM secret when it has one; else the public roots.
    ScramSecretOrPublicRoots,
}

/// The SASL mechanism and where its credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslSource {
    /// SCRAM, `username` and `password` in this secret.
    Scram {
        /// The hash.
        hash: ScramHash,
        /// Secrets Manager ARN.
        secret_arn: String,
    },
    /// MSK IAM: an OAUTHBEARER token signed for this region.
    MskIam {
        /// AWS region of the cluster.
        region: String,
    },
}

/// What a cluster needs; resolved into usable settings at connect time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecuritySpec {
    /// TLS, and whom to trust; `None`: PLAINTEXT.
    pub tls: Option<TrustSource>,
    /// SASL; `None`: no authentication.
    pub sasl: Option<SaslSource>,
}

impl SecuritySpec {
    /// Whether anything comes from Secrets Manager.
    fn reads_secrets(&self) -> bool {
        matches!(self.sasl, Some(SaslSource::Scram { .. }))
            || matches!(self.tls, Some(TrustSource::Secret(_) | TrustSource::ScramSecretOrPublicRoots))
    }
}

/// Credentials ready for a SASL exchange.
#[derive(Clone)]
pub enum SaslCredentials {
    /// SCRAM.
    Scram {
        /// The hash.
        hash: ScramHash,
        /// User name.
        username: String,
        /// Password.
        password: Redacted,
    },
    /// MSK IAM: a fresh token is signed for every authentication.
    MskIam {
        /// AWS region.
        region: String,
        /// The function's own credentials.
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
    },
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslCredentials::Scram { hash, username, .. } => f
                .debug_struct("Scram")
                .field("mechanism", &hash.mechanism())
                .field("username", username)
                .finish_non_exhaustive(),
            SaslCredentials::MskIam { region, .. } => f.debug_struct("MskIam").field("region", region).finish_non_exhaustive(),
        }
    }
}

impl SaslCredentials {
    /// The SASL mechanism name.
    pub fn mechanism(&self) -> &'static str {
        match self {
            SaslCredentials::Scram { hash, .. } => hash.mechanism(),
            SaslCredentials::MskIam { .. } => "OAUTHBEARER",
        }
    }
}

/// TLS and SASL settings ready for a connection.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// TLS client settings; `None`: PLAINTEXT.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL credentials; `None`: no authentication.
    pub sasl: Option<SaslCredentials>,
}

/// One cluster's security: the spec, and what was resolved from it.
pub struct Security {
    cluster: String,
    spec: SecuritySpec,
    secrets: Option<SecretsClient>,
    aws_credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    held: tokio::sync::Mutex<versions::Held>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("cluster", &self.cluster)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Security {
    /// PLAINTEXT, no authentication.
    pub fn plaintext(cluster: &str) -> Self {
        Self::new(cluster, SecuritySpec::default(), None)
    }

    /// `spec` for `cluster`, reading secrets and AWS credentials through `aws`.
    pub fn new(cluster: &str, spec: SecuritySpec, aws: Option<&aws_config::SdkConfig>) -> Self {
        Self {
            cluster: cluster.to_owned(),
            secrets: aws.filter(|_| spec.reads_secrets()).map(SecretsClient::new),
            aws_credentials: aws
                .and_then(aws_config::SdkConfig::credentials_provider)
                .map(|p| aws_credential_types::provider::SharedCredentialsProvider::new(CachedCredentials::new(p))),
            spec,
            held: tokio::sync::Mutex::new(versions::Held::default()),
        }
    }

    /// The settings from the secrets' `AWSCURRENT` versions, or with the
    /// SCRAM secret's version at `stage` (`None` if it has none), and a
    /// fingerprint of what the secrets gave (`None`: nothing read from one).
    async fn read(&self, stage: Option<&str>) -> Result<Option<versions::Read>, KafkaError> {
        let mut scram_certificate = None;
        let mut read: Vec<Option<String>> = Vec::new();
        let sasl = match &self.spec.sasl {
            None => None,
            Some(SaslSource::Scram { hash, secret_arn }) => {
                let Some(secret) = self.secret(secret_arn, stage).await? else {
                    return Ok(None);
                };
                let field = |name: &str| -> Result<String, KafkaError> {
                    secret.get(name).and_then(|v| v.as_str()).map(str::to_owned).ok_or_else(|| {
                        self.secret_error(
                            secret_arn,
                            format!("has no string field `{name}`; store {{\"username\": ..., \"password\": ...}}"),
                        )
                    })
                };
                scram_certificate = secret.get("certificate").and_then(|v| v.as_str()).map(str::to_owned);
                let (username, password) = (field("username")?, field("password")?);
                read.extend([Some(username.clone()), Some(password.clone()), scram_certificate.clone()]);
                Some(SaslCredentials::Scram {
                    hash: *hash,
                    username,
                    password: Redacted::new(password),
                })
            }
            Some(SaslSource::MskIam { region }) => Some(SaslCredentials::MskIam {
                region: region.clone(),
                credentials: self.aws_credentials.clone().ok_or_else(|| KafkaError::Auth {
                    cluster: self.cluster.clone(),
                    broker: String::new(),
                    detail: "MSK IAM needs AWS credentials and none are configured".into(),
                })?,
            }),
        };
        let certificate = scram_certificate.as_deref().map(|c| versions::fingerprint([Some(c)]));
        let tls = match &self.spec.tls {
            None => None,
            Some(trust) => {
                let pem = match trust {
                    TrustSource::PublicRoots => None,
                    TrustSource::ScramSecretOrPublicRoots => scram_certificate.map(|pem| ("the SCRAM secret".to_owned(), pem)),
                    TrustSource::Secret(arn) => {
                        let secret = self.secret(arn, None).await?.unwrap_or_default();
                        let pem = secret.get("certificate").and_then(|v| v.as_str()).ok_or_else(|| {
                            self.secret_error(arn, "has no string field `certificate`; store the CA chain (PEM) there".into())
                        })?;
                        read.push(Some(pem.to_owned()));
                        Some((format!("secret {arn}"), pem.to_owned()))
                    }
                };
                Some(Arc::new(self.tls_config(pem)?))
            }
        };
        Ok(Some(versions::Read {
            resolved: Resolved { tls, sasl },
            fingerprint: (!read.is_empty()).then(|| versions::fingerprint(read.iter().map(Option::as_deref))),
            certificate,
        }))
    }

    fn tls_config(&self, pem: Option<(String, String)>) -> Result<rustls::ClientConfig, KafkaError> {
        let mut roots = rustls::RootCertStore::empty();
        match pem {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some((from, pem)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|_| self.tls_error(format!("the certificate in {from} is not valid PEM")))?;
                if certs.is_empty() {
                    return Err(self.tls_error(format!(
                        "the certificate in {from} holds no PEM certificate: store the private root CA (and intermediates) as PEM"
                    )));
                }
                // Every certificate of the chain is a trust anchor: the root,
                // and intermediates a broker may not send.
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| self.tls_error(format!("a certificate in {from} cannot be trusted: {e}")))?;
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.tls_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// A secret's JSON object: its `AWSCURRENT` version, or the one at
    /// `stage` (`None` if no version has that label).
    async fn secret(&self, arn: &str, stage: Option<&str>) -> Result<Option<serde_json::Map<String, serde_json::Value>>, KafkaError> {
        let client = self
            .secrets
            .as_ref()
            .ok_or_else(|| self.secret_error(arn, "cannot be read: no AWS configuration".into()))?;
        let res = client
            .get_secret_value()
            .secret_id(arn)
            .set_version_stage(stage.map(str::to_owned))
            .send()
            .await;
        if stage.is_some()
            && res
                .as_ref()
                .err()
                .and_then(|e| e.as_service_error())
                .is_some_and(|e| e.is_resource_not_found_exception())
        {
            return Ok(None);
        }
        let out = res.map_err(|e| {
            // Unreachable is not refused: point at the network, not the ARN.
            let transient = crate::aws::is_transient(&e);
            let fix = crate::aws::unreachable_hint(&e, "secretsmanager")
                .unwrap_or_else(|| "check the ARN and that Ferry's role may call secretsmanager:GetSecretValue on it".into());
            let e = crate::aws::describe(&e);
            KafkaError::Secret {
                cluster: self.cluster.clone(),
                arn: arn.to_owned(),
                detail: format!("cannot be read ({e}); {fix}"),
                transient,
            }
        })?;
        let text = out
            .secret_string()
            .ok_or_else(|| self.secret_error(arn, "holds no SecretString; store a JSON object".into()))?;
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
            // Never echo the text: it is the secret.
            _ => Err(self.secret_error(
                arn,
                "is not a JSON object; store {\"username\": ..., \"password\": ..., \"certificate\": ...}".into(),
            )),
        }
    }

    fn secret_error(&self, arn: &str, detail: String) -> KafkaError {
        KafkaError::Secret {
            cluster: self.cluster.clone(),
            arn: arn.to_owned(),
            detail,
            transient: false,
        }
    }

    fn tls_error(&self, detail: String) -> KafkaError {
        KafkaError::Tls {
            cluster: self.cluster.clone(),
            broker: String::new(),
            detail,
            transient: false,
        }
    }
}

/// Why no MSK IAM token could be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningFault {
    /// The credentials provider failed (a timeout, STS throttling, the
    /// container endpoint or IMDS busy): no broker saw a token, and the
    /// next attempt may get credentials. The provider's cause is kept.
    Credentials(String),
    /// The token itself could not be built from the credentials.
    Token(String),
}

/// The OAUTHBEARER initial client response (RFC 7628) for MSK IAM.
pub async fn msk_iam_client_response(
    region: &str,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
) -> Result<Redacted, SigningFault> {
    use aws_credential_types::provider::ProvideCredentials as _;
    // Credentials first, so that their fault is told from the token's.
    let creds = credentials.provide_credentials().await.map_err(|c| {
        SigningFault::Credentials(format!(
            "the AWS credentials to sign the MSK IAM token could not be had: {}",
            causes(&c)
        ))
    })?;
    let (token, _expiry_ms) = aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
        aws_config::Region::new(region.to_owned()),
        aws_credential_types::provider::SharedCredentialsProvider::new(creds),
    )
    .await
    .map_err(|e| SigningFault::Token(format!("signing the MSK IAM token failed: {}", causes(&e))))?;
    Ok(Redacted::new(format!("n,,\u{1}auth=Bearer {token}\u{1}\u{1}")))
}

/// An error and its sources, each in its `Display` form (never `Debug`).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// How long before their expiry cached credentials are fetched again.
pub const CREDENTIALS_REFRESH_BEFORE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The function's credentials, fetched once and kept until shortly before
/// they expire. `SdkConfig::credentials_provider()` is the bare provider
/// chain (the SDK clients put their identity cache in front of it, the MSK
/// IAM signer does not): without this every MSK IAM authentication (every
/// connection, every re-authentication) would call STS, IMDS or the
/// container endpoint again.
#[derive(Debug)]
pub struct CachedCredentials {
    inner: aws_credential_types::provider::SharedCredentialsProvider,
    held: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
}

impl CachedCredentials {
    /// In front of `inner`.
    pub fn new(inner: aws_credential_types::provider::SharedCredentialsProvider) -> Self {
        Self {
            inner,
            held: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> aws_credential_types::provider::Result {
        let mut held = self.held.lock().await;
        if let Some(c) = held.as_ref() {
            let fresh = c.expiry().is_none_or(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .is_ok_and(|left| left > CREDENTIALS_REFRESH_BEFORE_EXPIRY)
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        use aws_credential_types::provider::ProvideCredentials as _;
        let c = self.inner.provide_credentials().await?;
        *held = Some(c.clone());
        Ok(c)
    }
}

impl aws_credential_types::provider::ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(self.get())
    }
}

/// Whether a failed handshake was cut rather than refused: no TLS error
/// inside the I/O error (closed, reset).
pub fn tls_failure_is_transient(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_none()
}

/// Words for a failed TLS handshake: what is wrong and how to fix it.
pub fn describe_tls_failure(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(err) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return format!("TLS handshake failed: {e} (is this a TLS listener?)");
    };
    let fix = match err {
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the broker's certificate does not chain to a trusted CA: put the private root CA and intermediates (PEM) in the secret's `certificate` field"
        }
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the broker's certificate has expired: renew it on the broker"
        }
        Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the broker's certificate is not valid yet: check the broker's certificate and this machine's clock"
        }
        Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            "the broker's certificate does not name the host Ferry connected to: use a bootstrap host name the certificate names"
        }
        _ => "check the listener's TLS settings",
    };
    format!("TLS handshake failed: {err}; {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = SaslCredentials::Scram {
            hash: ScramHash::Sha512,
            username: "ferry".into(),
            password: Redacted::new("p4ssw0rd-very-secret"),
        };
        let shown = format!("{c:?} {:?}", Redacted::new("p4ssw0rd-very-secret"));
        assert!(!shown.contains("p4ssw0rd"), "{shown}");
        assert!(shown.contains("SCRAM-SHA-512") && shown.contains("ferry"), "{shown}");
    }

    #[tokio::test]
    async fn msk_iam_token_is_a_signed_kafka_connect_url() {
        // Signing is local: static credentials exercise it without AWS.
        let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test");
        let provider = aws_credential_types::provider::SharedCredentialsProvider::new(creds);
        let msg = msk_iam_client_response("eu-west-1", provider).await.expect("token");
        let text = msg.expose();
        let token = text
            .strip_prefix("n,,\u{1}auth=Bearer ")
            .and_then(|t| t.strip_suffix("\u{1}\u{1}"))
            .expect("OAUTHBEARER framing");
        use base64::Engine as _;
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).expect("base64url")).expect("utf8");
        assert!(url.starts_with("https://kafka.eu-west-1.amazonaws.com/?"), "{url}");
        for part in [
            "Action=kafka-cluster%3AConnect",
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Signature=",
            "X-Amz-Expires=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("wJalrXUtnFEMI"), "the secret key must not be in the token");
        assert!(!format!("{msg:?}").contains("Bearer"));
    }

    /// Credentials are fetched once and kept while more than five minutes
    /// of their validity are left; then fetched again.
    #[tokio::test]
    async fn credentials_are_kept_until_shortly_before_they_expire() {
        use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, SystemTime};
        #[derive(Debug)]
        struct Counting(Arc<AtomicUsize>, Duration);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.fetch_add(1, Ordering::SeqCst);
                let c =
                    aws_credential_types::Credentials::new("AKID", "secret", Some("token".into()), Some(SystemTime::now() + self.1), "t");
                future::ProvideCredentials::ready(Ok(c))
            }
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let hour = CachedCredentials::new(SharedCredentialsProvider::new(Counting(calls.clone(), Duration::from_secs(3600))));
        for _ in 0..5 {
            hour.provide_credentials().await.expect("credentials");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "an hour's credentials are fetched once");
        let calls = Arc::new(AtomicUsize::new(0));
        let short = CachedCredentials::new(SharedCredentialsProvider::new(Counting(calls.clone(), Duration::from_secs(120))));
        for _ in 0..3 {
            short.provide_credentials().await.expect("credentials");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3, "credentials about to expire are fetched again");
    }

    /// A credentials provider's failure is told from a token that cannot be
    /// built, and its cause is kept.
    #[tokio::test]
    async fn a_credentials_fault_while_signing_keeps_its_cause() {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
        #[derive(Debug)]
        struct Throttled;
        impl ProvideCredentials for Throttled {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                future::ProvideCredentials::ready(Err(CredentialsError::provider_error("ThrottlingException: Rate exceeded")))
            }
        }
        let err = msk_iam_client_response("us-east-1", SharedCredentialsProvider::new(Throttled))
            .await
            .expect_err("no credentials");
        match err {
            SigningFault::Credentials(detail) => assert!(detail.contains("ThrottlingException: Rate exceeded"), "{detail}"),
            other => panic!("not a credentials fault: {other:?}"),
        }
    }

    #[test]
    fn tls_failures_say_how_to_fix_them() {
        use rustls::{CertificateError, Error};
        let io = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let unknown = describe_tls_failure(&io(Error::InvalidCertificate(CertificateError::UnknownIssuer)));
        assert!(unknown.contains("private root CA"), "{unknown}");
        let expired = describe_tls_failure(&io(Error::InvalidCertificate(CertificateError::Expired)));
        assert!(expired.contains("expired"), "{expired}");
        let name = describe_tls_failure(&io(Error::InvalidCertificate(CertificateError::NotValidForName)));
        assert!(name.contains("host name"), "{name}");
    }

    #[test]
    fn bad_pem_is_refused_without_echoing_it() {
        let s = Security::plaintext("source");
        let err = s
            .tls_config(Some((
                "secret x".into(),
                "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n".into(),
            )))
            .expect_err("bad PEM");
        assert!(!err.to_string().contains("not base64"), "{err}");
        let err = s.tls_config(Some(("secret x".into(), "hello".into()))).expect_err("no PEM");
        assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
        assert!(s.tls_config(None).is_ok());
    }
}
