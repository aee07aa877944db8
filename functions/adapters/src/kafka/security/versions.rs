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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

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
    /// Identifies what was read (user, password, certificates), never
    /// shown: `None` for credentials that are not read from a secret.
    pub(super) fingerprint: Option<u64>,
}

/// What the connections log in with now, and what was read and refused
/// since the last login that worked.
#[derive(Default)]
pub(super) struct Held {
    now: Option<Credentials>,
    generation: u64,
    read: Vec<Stage>,
    refused: Vec<u64>,
}

impl Held {
    fn hold(&mut self, resolved: Resolved, fingerprint: Option<u64>, stage: Stage) -> Credentials {
        self.generation += 1;
        let c = Credentials {
            resolved: Arc::new(resolved),
            stage,
            generation: self.generation,
            fingerprint,
        };
        self.now = Some(c.clone());
        c
    }

    fn clear(&mut self) {
        self.now = None;
        self.read.clear();
        self.refused.clear();
    }
}

/// A fingerprint of what a secret gave (never shown, never stored).
pub(super) fn fingerprint<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl Security {
    /// The credentials for a new connection, reading the secrets if none
    /// are held.
    pub async fn resolve(&self) -> Result<Credentials, KafkaError> {
        let mut held = self.held.lock().await;
        if let Some(c) = &held.now {
            return Ok(c.clone());
        }
        let (resolved, fingerprint) = self
            .read(None)
            .await?
            .ok_or_else(|| KafkaError::protocol("", "Secrets Manager answered with no current version of a secret"))?;
        held.clear();
        held.read.push(Stage::Current);
        Ok(held.hold(resolved, fingerprint, Stage::Current))
    }

    /// A login with `generation` worked: a later refusal reads every
    /// version again.
    pub async fn logged_in(&self, generation: u64) {
        let mut held = self.held.lock().await;
        if held.now.as_ref().is_some_and(|c| c.generation == generation) {
            held.read.clear();
            held.refused.clear();
        }
    }

    /// A login with `generation` was refused: the next credentials to try
    /// (see the module's documentation), or `None` when none is left (or
    /// another connection found none). An error reading a version that
    /// may pass (Secrets Manager throttling, unreachable) is returned as
    /// it is, and the same step is taken again next time; the current
    /// version refused or unusable is the answer; another version that
    /// cannot be read is passed over.
    pub async fn refused(&self, generation: u64) -> Result<Option<Credentials>, KafkaError> {
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
            if held.read.contains(&stage) || (stage != Stage::Current && !scram) {
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
                Some((_, Some(f))) if held.refused.contains(&f) => {}
                Some((resolved, fingerprint)) => return Ok(Some(held.hold(resolved, fingerprint, stage))),
                None => {}
            }
        }
        held.clear();
        Ok(None)
    }

    /// Hold nothing: the next connection reads the secrets again.
    pub async fn forget(&self) {
        self.held.lock().await.clear();
    }
}
