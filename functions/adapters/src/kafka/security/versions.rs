//! Which version of the SCRAM secret a cluster's connections log in with.
//!
//! Credentials are read once and held. When a login is refused, the next
//! candidates are read in turn: the secret's `AWSCURRENT` version afresh
//! (it may have been rotated since it was read), then `AWSPENDING` (a
//! rotation function sets the new password in Kafka, its setSecret step,
//! before it makes that version current, finishSecret), then
//! `AWSPREVIOUS` (Amazon MSK picks a changed secret up within minutes, and
//! takes the old password until then). A candidate the same as one refused
//! since the last login that worked is passed over; when none is left,
//! nothing is held and the refusal is the answer.
//!
//! Every connection of a cluster shares what is held, and their refusals
//! may come together (sessions opened together end together, KIP-368).
//! So each candidate carries a generation: a refusal of credentials that
//! are no longer held moves nothing on and gets what is held now, and the
//! candidates are read under one lock, one connection at a time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use super::*;

/// A version of the SCRAM secret, by its Secrets Manager label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `AWSCURRENT`.
    Current,
    /// `AWSPENDING`: a rotation under way.
    Pending,
    /// `AWSPREVIOUS`: the version before the last rotation.
    Previous,
}

impl Stage {
    /// The Secrets Manager label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }

    /// The label to ask for (`None`: the default, `AWSCURRENT`).
    pub(super) fn version_stage(self) -> Option<&'static str> {
        (self != Stage::Current).then(|| self.label())
    }
}

/// Credentials to log in with, and where they came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The settings for a connection.
    pub resolved: Arc<Resolved>,
    /// Which version of the SCRAM secret they came from (`Current` for
    /// every other kind of credentials).
    pub stage: Stage,
    /// Told back with a refusal (see [`Security::refused`]).
    pub generation: u64,
    /// What was read (user, password, certificates), to tell versions
    /// apart: `None` for credentials not read from a secret.
    pub(super) fingerprint: Option<Fingerprint>,
    /// When they were read.
    read_at: Instant,
}

/// A keyed hash (its key random per process) of what a secret gave: never
/// shown, never stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint(u64);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<fingerprint>")
    }
}

/// How long a version other than `AWSCURRENT` is held before `AWSCURRENT`
/// is tried again: a rotation finished, or the cluster took the new
/// password, since.
const BACK_TO_CURRENT: Duration = if cfg!(test) {
    Duration::from_secs(2)
} else {
    Duration::from_secs(300)
};

/// Process-wide key of the fingerprints.
fn fingerprint_key() -> &'static RandomState {
    static KEY: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

/// What the connections log in with now, and what was read and refused
/// since the last login that worked.
#[derive(Default)]
pub(super) struct Held {
    now: Option<Credentials>,
    generation: u64,
    read: Vec<Stage>,
    refused: Vec<Fingerprint>,
    /// The certificate of the SCRAM secret's current version, as last
    /// read: a previous version with another one is never used.
    current_certificate: Option<Option<Fingerprint>>,
    /// Logins that worked with the credentials held (warned of once).
    logged_in: u64,
}

impl Held {
    fn hold(&mut self, read: Read, stage: Stage) -> Credentials {
        self.generation += 1;
        if stage == Stage::Current {
            self.current_certificate = Some(read.certificate);
        }
        let c = Credentials {
            resolved: Arc::new(read.resolved),
            stage,
            generation: self.generation,
            fingerprint: read.fingerprint,
            read_at: Instant::now(),
        };
        self.now = Some(c.clone());
        self.logged_in = 0;
        c
    }

    fn clear(&mut self) {
        self.now = None;
        self.read.clear();
        self.refused.clear();
        self.current_certificate = None;
    }
}

/// What one reading of the secrets gave.
pub(super) struct Read {
    pub(super) resolved: Resolved,
    /// Of everything read; `None`: nothing read from a secret.
    pub(super) fingerprint: Option<Fingerprint>,
    /// Of the SCRAM secret's `certificate` (`None`: it has none).
    pub(super) certificate: Option<Fingerprint>,
}

/// The fingerprint of what a secret gave.
pub(super) fn fingerprint<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> Fingerprint {
    let mut h = fingerprint_key().build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    Fingerprint(h.finish())
}

impl Security {
    /// The credentials for a new connection, reading the secrets if none
    /// are held, or if those held are not the current version's and were
    /// read [`BACK_TO_CURRENT`] ago.
    pub async fn resolve(&self) -> Result<Credentials, KafkaError> {
        let mut held = self.held.lock().await;
        if let Some(c) = held
            .now
            .as_ref()
            .filter(|c| c.stage == Stage::Current || c.read_at.elapsed() < BACK_TO_CURRENT)
        {
            return Ok(c.clone());
        }
        let read = match self.read(None).await {
            Ok(read) => read.ok_or_else(|| KafkaError::protocol("", "Secrets Manager answered with no current version of a secret"))?,
            // Time to try AWSCURRENT again, and Secrets Manager does not
            // answer: what is held still logs in.
            Err(e) => match held.now.clone() {
                Some(now) if e.is_transient() => return Ok(now),
                _ => return Err(e),
            },
        };
        held.clear();
        held.read.push(Stage::Current);
        Ok(held.hold(read, Stage::Current))
    }

    /// A login with `generation` worked: a later refusal reads every
    /// version again. Whether it is the first with these credentials.
    pub async fn logged_in(&self, generation: u64) -> bool {
        let mut held = self.held.lock().await;
        if held.now.as_ref().is_some_and(|c| c.generation == generation) {
            held.read.clear();
            held.refused.clear();
            held.logged_in += 1;
            return held.logged_in == 1;
        }
        false
    }

    /// A login with `generation` was refused: the next credentials to try
    /// (see the module's documentation), or `None` when none is left (or
    /// another connection found none). An error reading a version that
    /// may pass (Secrets Manager throttling, unreachable) is returned as
    /// it is, and the same step is taken again next time; the current
    /// version refused or unusable is the answer; another version that
    /// cannot be read is passed over. `AWSPREVIOUS` is tried only after a
    /// login refused (not a TLS
    /// handshake: a certificate rotated out is never trusted again) and
    /// only with the certificate the current version holds.
    pub async fn refused(&self, generation: u64, login_refused: bool) -> Result<Option<Credentials>, KafkaError> {
        let mut held = self.held.lock().await;
        let Some(now) = held.now.clone() else {
            return Ok(None);
        };
        if now.generation != generation {
            return Ok(Some(now));
        }
        if let Some(f) = now.fingerprint {
            held.refused.push(f);
        }
        let scram = matches!(self.spec.sasl, Some(SaslSource::Scram { .. }));
        for stage in [Stage::Current, Stage::Pending, Stage::Previous] {
            if held.read.contains(&stage) || (stage != Stage::Current && !scram) || (stage == Stage::Previous && !login_refused) {
                continue;
            }
            let read = match self.read(stage.version_stage()).await {
                Ok(read) => read,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) if stage == Stage::Current => {
                    held.clear();
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(cluster = %self.cluster, stage = stage.label(), error = %e, "a version of the secret could not be read; passed over");
                    None
                }
            };
            held.read.push(stage);
            match read {
                Some(r) if r.fingerprint.is_some_and(|f| held.refused.contains(&f)) => {}
                Some(r) if stage == Stage::Previous && held.current_certificate != Some(r.certificate) => {
                    tracing::warn!(cluster = %self.cluster, "the secret's AWSPREVIOUS version holds another certificate than AWSCURRENT: not used");
                }
                Some(r) => return Ok(Some(held.hold(r, stage))),
                None => {}
            }
        }
        tracing::info!(cluster = %self.cluster, "no version of the secret was taken (each of AWSCURRENT, AWSPENDING and AWSPREVIOUS it has was tried)");
        held.clear();
        Ok(None)
    }

    /// Hold nothing: the next connection reads the secrets again.
    pub async fn forget(&self) {
        self.held.lock().await.clear();
    }
}
