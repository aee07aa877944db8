//! Logging in to a broker: a new connection authenticates with the
//! credentials the cluster's security holds; a refusal reads the secret's
//! versions again and tries each one not yet refused (see
//! `security::versions`), and then waits, longer after each further
//! refusal, so wrong credentials do not hammer the broker and fixed ones
//! are picked up.

use super::*;
use crate::kafka::security::Stage;

/// The first wait after an authentication or TLS failure, doubled on each
/// further one up to `AUTH_BACKOFF_MAX`: credentials that are wrong stay
/// wrong until someone fixes them, and the broker is not hammered meanwhile.
const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(1);
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The last authentication failure, and until when connecting is not tried.
pub(super) struct AuthBackoff {
    until: std::time::Instant,
    delay: Duration,
    error: String,
}

/// Logins one new connection tries at most: the held credentials and the
/// secret's three versions, and a few more that other connections read
/// meanwhile.
const LOGINS_PER_CONNECT: usize = 8;

impl KafkaCluster {
    /// A connection to `addr`: refused at once while backing off after an
    /// authentication failure; such a failure starts or lengthens the wait.
    pub(super) async fn connect(&self, addr: &str) -> Result<Connection, KafkaError> {
        if let Some(b) = lock(&self.auth_backoff).as_ref().filter(|b| std::time::Instant::now() < b.until) {
            return Err(KafkaError::AuthBackoff {
                cluster: self.alias.clone(),
                last: b.error.clone(),
                seconds: b.until.saturating_duration_since(std::time::Instant::now()).as_secs() + 1,
            });
        }
        let client_id = self.client_id();
        let res = self.log_in(addr, &client_id).await;
        match &res {
            Ok(_) => *lock(&self.auth_backoff) = None,
            Err(e) if e.is_auth_error() && !e.is_transient() => self.auth_failed(e),
            Err(_) => {}
        }
        res
    }

    /// Connect and log in with the credentials held; on a refusal, with
    /// the next version of the secret (see `Security::refused`) until one
    /// is taken or none is left. The answer then is the refusal of the
    /// secret's current version.
    async fn log_in(&self, addr: &str, client_id: &str) -> Result<Connection, KafkaError> {
        let mut creds = self.security.resolve().await?;
        let mut answer: Option<KafkaError> = None;
        // Each refusal moves the reading on, or gets a newer one another
        // connection made: a few logins at most (a bound all the same).
        for _ in 0..LOGINS_PER_CONNECT {
            let e = match Connection::connect(addr, &self.alias, client_id, self.request_timeout, &creds.resolved).await {
                Ok(conn) => {
                    if self.security.logged_in(creds.generation).await && creds.stage != Stage::Current {
                        tracing::warn!(cluster = %self.alias, broker = addr, stage = creds.stage.label(), "{}", not_current(creds.stage));
                    }
                    return Ok(conn);
                }
                Err(e) if e.is_refusal() => e,
                Err(e) => return Err(e),
            };
            let login_refused = matches!(e, KafkaError::Auth { .. });
            if answer.is_none() {
                tracing::info!(cluster = %self.alias, error = %e, "authentication refused; reading the credentials again (a SCRAM secret's current, pending and previous versions)");
            }
            if creds.stage == Stage::Current || answer.is_none() {
                answer = Some(e);
            }
            match self.security.refused(creds.generation, login_refused).await? {
                Some(next) => creds = next,
                None => break,
            }
        }
        Err(answer.unwrap_or_else(|| KafkaError::protocol(addr, "no credentials tried")))
    }

    /// Forget the wait an earlier refusal left (see `connect`): a new
    /// invocation of a warm function tries again at once, once, and then
    /// either gets in or meets the refusal itself, instead of waiting out a
    /// wait that grew over earlier invocations.
    pub fn forget_auth_wait(&self) {
        *lock(&self.auth_backoff) = None;
    }

    /// Note an authentication failure: wait longer before the next attempt
    /// (which reads the secret's versions again, see `log_in`).
    pub(super) fn auth_failed(&self, e: &KafkaError) {
        let mut b = lock(&self.auth_backoff);
        let delay = b.as_ref().map_or(AUTH_BACKOFF_MIN, |b| (b.delay * 2).min(AUTH_BACKOFF_MAX));
        tracing::warn!(cluster = %self.alias, error = %e, wait_s = delay.as_secs(), "authentication failed; waiting before connecting again");
        *b = Some(AuthBackoff {
            until: std::time::Instant::now() + delay,
            delay,
            error: e.to_string(),
        });
    }
}

/// Why a login used a version of the secret other than `AWSCURRENT`.
fn not_current(stage: Stage) -> &'static str {
    match stage {
        Stage::Pending => "logged in with the secret's AWSPENDING version: a rotation has set the new password in Kafka and not yet made it AWSCURRENT",
        _ => "logged in with the secret's AWSPREVIOUS version: the cluster does not take AWSCURRENT (yet). Amazon MSK picks a changed secret up within minutes; elsewhere, set the new password in Kafka. AWSCURRENT is tried again every 5 minutes",
    }
}

#[cfg(test)]
mod tests {
    //! Against the local stack's SASL_SSL listener and moto's Secrets
    //! Manager (`infra/local/up`, then `. infra/local/stack.env`).
    use super::*;
    use crate::kafka::scram::ScramHash;
    use crate::kafka::security::{SaslSource, SecuritySpec, TrustSource};

    fn stack(var: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| panic!("{var} unset: run infra/local/up and source infra/local/stack.env"))
    }

    /// A SCRAM secret for the stack's user, made with one password, and
    /// clusters of the SASL_SSL listener that read it.
    struct Rotating {
        aws: aws_config::SdkConfig,
        sm: aws_sdk_secretsmanager::Client,
        arn: String,
        bootstrap: String,
        ca: String,
    }

    impl Rotating {
        async fn new(password: &str) -> Self {
            let aws = crate::aws::load().await;
            let sm = aws_sdk_secretsmanager::Client::new(&aws);
            let ca = std::fs::read_to_string(stack("SOURCE_CA_FILE")).expect("the stack's CA");
            let mut r = Rotating {
                aws,
                sm,
                arn: String::new(),
                bootstrap: stack("SOURCE_SASL_SSL_BOOTSTRAP"),
                ca,
            };
            r.arn =
                r.sm.create_secret()
                    .name(format!("ferry-it/rotation-{}", uuid::Uuid::new_v4().simple()))
                    .secret_string(r.value(password))
                    .send()
                    .await
                    .expect("secret (is moto up?)")
                    .arn
                    .expect("arn");
            r
        }

        fn value(&self, password: &str) -> String {
            serde_json::json!({"username": stack("SOURCE_SCRAM_USER"), "password": password, "certificate": self.ca}).to_string()
        }

        /// A new version with `password`, at `stage` (`None`: made current).
        async fn put(&self, password: &str, stage: Option<&str>) {
            self.sm
                .put_secret_value()
                .secret_id(&self.arn)
                .secret_string(self.value(password))
                .set_version_stages(stage.map(|s| vec![s.to_owned()]))
                .send()
                .await
                .expect("a new version");
        }

        fn cluster(&self) -> KafkaCluster {
            let spec = SecuritySpec {
                tls: Some(TrustSource::ScramSecretOrPublicRoots),
                sasl: Some(SaslSource::Scram {
                    hash: ScramHash::Sha512,
                    secret_arn: self.arn.clone(),
                }),
            };
            KafkaCluster::new("source", vec![self.bootstrap.clone()], Duration::from_secs(10)).with_security(Security::new(
                "source",
                spec,
                Some(&self.aws),
            ))
        }
    }

    /// The previous version taken while the cluster does not take the
    /// current one (Amazon MSK's lag), and the current one again once it
    /// does: not the previous one for as long as the cluster takes it.
    #[tokio::test]
    async fn the_previous_version_is_left_for_the_current_one_once_the_cluster_takes_it() {
        let r = Rotating::new(&stack("SOURCE_SCRAM_PASSWORD")).await;
        r.put("not-yet-taken", None).await;
        let c = r.cluster();
        c.connect(&r.bootstrap).await.expect("logged in with AWSPREVIOUS");
        assert_eq!(c.security.resolve().await.expect("held").stage, Stage::Previous);
        // The cluster takes the current version now (here: the current
        // version is the password the cluster has).
        r.put(&stack("SOURCE_SCRAM_PASSWORD"), None).await;
        tokio::time::sleep(Duration::from_secs(3)).await; // past BACK_TO_CURRENT in tests
        c.connect(&r.bootstrap).await.expect("logged in with AWSCURRENT");
        assert_eq!(c.security.resolve().await.expect("held").stage, Stage::Current);
    }

    /// Connections to two brokers refused together in a rotation's window
    /// (AWSCURRENT wrong, AWSPENDING right) both log in, and so do later
    /// ones: neither undoes what the other found. One broker under two
    /// names stands for two.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_refused_together_in_a_rotation_all_log_in_with_the_pending_version() {
        let r = Rotating::new("not-the-password").await;
        r.put(&stack("SOURCE_SCRAM_PASSWORD"), Some("AWSPENDING")).await;
        let other_name = r.bootstrap.to_uppercase();
        for round in 0..5 {
            let c = r.cluster();
            let (a, b) = tokio::join!(c.connect(&r.bootstrap), c.connect(&other_name));
            assert!(a.is_ok() && b.is_ok(), "round {round}: {:?} / {:?}", a.err(), b.err());
            let later = c.connect(&r.bootstrap).await;
            assert!(later.is_ok(), "round {round}, a later connection: {:?}", later.err());
        }
    }
}
