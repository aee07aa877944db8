//! Logging in to a broker: a new connection authenticates with what the
//! cluster's security resolved; a refusal reads the credentials once more
//! and tries again, then the secret's pending version (a rotation half
//! done), and then waits, longer after each further refusal, so wrong
//! credentials do not hammer the broker and fixed ones are picked up.

use super::*;

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
        let client_id = format!("ferry-{}", self.alias);
        let attempt = || async {
            match self.security.resolve().await {
                Ok(resolved) => Connection::connect(addr, &self.alias, &client_id, self.request_timeout, &resolved).await,
                Err(e) => Err(e),
            }
        };
        let mut res = attempt().await;
        if res.as_ref().is_err_and(KafkaError::is_refusal) && lock(&self.auth_backoff).is_none() {
            // The first refusal: the password may just have been rotated.
            // Read the secret again and try once more at once; a second
            // refusal is the answer (and starts the wait below).
            self.security.forget().await;
            tracing::info!(cluster = %self.alias, error = %res.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                "authentication refused; reading the credentials again and trying once more");
            res = attempt().await;
            if matches!(res, Err(KafkaError::Auth { .. })) {
                res = self.try_pending(addr, &client_id, res).await;
            }
        }
        match &res {
            Ok(_) => *lock(&self.auth_backoff) = None,
            Err(e) if e.is_auth_error() && !e.is_transient() => self.auth_failed(e).await,
            Err(_) => {}
        }
        res
    }

    /// After the secret's current version was refused twice: a rotation
    /// may have set the new password in Kafka and not yet made it current
    /// (see `Security::adopt_pending`). Connect with the pending version if
    /// there is one; if that is refused too, or cannot be read, the
    /// current version's refusal stands.
    async fn try_pending(&self, addr: &str, client_id: &str, refused: Result<Connection, KafkaError>) -> Result<Connection, KafkaError> {
        let pending = match self.security.adopt_pending().await {
            Ok(Some(p)) => p,
            Ok(None) => return refused,
            Err(e) => {
                tracing::warn!(cluster = %self.alias, error = %e, "the secret's AWSPENDING version could not be read");
                return refused;
            }
        };
        match Connection::connect(addr, &self.alias, client_id, self.request_timeout, &pending).await {
            Ok(conn) => {
                tracing::warn!(cluster = %self.alias, broker = addr,
                    "connected with the secret's AWSPENDING version: a rotation has set the new password in Kafka and not yet made it AWSCURRENT");
                Ok(conn)
            }
            Err(e) => {
                tracing::info!(cluster = %self.alias, error = %e, "the secret's AWSPENDING version was refused too");
                self.security.forget().await;
                refused
            }
        }
    }

    /// Forget the wait an earlier refusal left (see `connect`): a new
    /// invocation of a warm function tries again at once, once, and then
    /// either gets in or meets the refusal itself, instead of waiting out a
    /// wait that grew over earlier invocations.
    pub fn forget_auth_wait(&self) {
        *lock(&self.auth_backoff) = None;
    }

    /// Note an authentication failure: forget the credentials read (they
    /// may have been rotated) and wait longer before the next attempt.
    pub(super) async fn auth_failed(&self, e: &KafkaError) {
        self.security.forget().await;
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
