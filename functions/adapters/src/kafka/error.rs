//! Kafka client errors, with the broker, topic and partition they concern,
//! classified once as retryable or not.

use kafka_protocol::ResponseError;

use super::batch::BatchError;

/// Why a broker refused a produce, in the terms a writer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceRefusal {
    /// The broker lost or fenced the producer's state (a restart, a
    /// successor's fence): nothing was written; a reconcile decides.
    ProducerState,
    /// The batch is larger than the topic takes.
    TooLarge,
    /// A timestamp outside the topic's accepted window.
    Timestamp,
    /// The principal may not write there.
    NotAuthorized,
    /// The broker found the records invalid for the topic.
    InvalidRecords,
    /// Any other error code.
    Other,
}

/// A failure talking to a Kafka cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// TCP connect failed.
    #[error("cannot connect to broker {broker}: {source}")]
    Connect {
        /// Broker address.
        broker: String,
        /// Cause.
        source: std::io::Error,
    },
    /// I/O failed on an open connection.
    #[error("connection to broker {broker} failed: {source}")]
    Io {
        /// Broker address.
        broker: String,
        /// Cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("broker {broker} did not answer the {what} in time")]
    Timeout {
        /// Broker address.
        broker: String,
        /// What timed out.
        what: String,
    },
    /// The broker throttles Ferry's client for a quota for longer than a
    /// request may wait, or kept throttling a fetch (see `throttle.rs`).
    #[error(
        "broker {broker} of cluster {cluster} throttles Ferry's client id {client_id} for a quota ({what}); \
         asked again in {wait_ms} ms or later. Raise that client id's quota if Ferry falls behind"
    )]
    Throttled {
        /// Cluster alias.
        cluster: String,
        /// Broker address.
        broker: String,
        /// Ferry's client id there.
        client_id: String,
        /// What was not sent or not answered.
        what: String,
        /// Milliseconds the broker still asks Ferry to wait.
        wait_ms: u64,
    },
    /// A partition answered no records from an offset below an end it
    /// reported: never the end of its log, so never read as one.
    #[error(
        "topic {topic} partition {partition} on cluster {cluster} answered no records at offset {offset}, below its end {end} \
         (a broker reading from tiered storage answers so when the remote read is slow): read again later"
    )]
    NoRecordsBelowEnd {
        /// Cluster alias.
        cluster: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where the fetch began.
        offset: i64,
        /// The end the partition reported (high watermark or last stable offset).
        end: i64,
    },
    /// The broker and Ferry share no version of an API.
    #[error("broker {broker} cannot serve {api}: {detail}")]
    Unsupported {
        /// Broker address.
        broker: String,
        /// API name.
        api: String,
        /// Versions on each side.
        detail: String,
    },
    /// The bytes on the wire made no sense.
    #[error("protocol error with broker {broker}: {detail}")]
    Protocol {
        /// Broker address.
        broker: String,
        /// Detail.
        detail: String,
    },
    /// An answer that does not decode at the version both sides agreed on:
    /// the same request gets the same answer, so trying again cannot help.
    #[error("protocol error with broker {broker}: decoding its {api} v{version} response: {detail}")]
    Undecodable {
        /// Broker address.
        broker: String,
        /// API name.
        api: String,
        /// The version of the request and the response.
        version: i16,
        /// What the decoder said.
        detail: String,
    },
    /// None of the bootstrap brokers answered.
    #[error("no broker of cluster {cluster} answered (tried {tried}): {last}")]
    NoBroker {
        /// Cluster alias.
        cluster: String,
        /// Addresses tried.
        tried: String,
        /// Last error.
        last: String,
    },
    /// TLS could not be set up or the broker's certificate is not trusted.
    #[error("TLS to cluster {cluster}{}: {detail}", at_broker(broker))]
    Tls {
        /// Cluster alias.
        cluster: String,
        /// Broker address (empty before one is contacted).
        broker: String,
        /// What is wrong and how to fix it.
        detail: String,
        /// The handshake was cut (the connection closed or reset, no TLS
        /// error inside): a broker restarting or the network, perhaps a
        /// PLAINTEXT port; tried again, unlike a certificate refused.
        transient: bool,
    },
    /// SASL authentication failed.
    #[error("authentication to cluster {cluster}{} failed: {detail}", at_broker(broker))]
    Auth {
        /// Cluster alias.
        cluster: String,
        /// Broker address (empty before one is contacted).
        broker: String,
        /// What is wrong and how to fix it (never a credential).
        detail: String,
    },
    /// Ferry's own AWS credentials could not be had to sign an MSK IAM
    /// token (the provider timed out, STS throttled, the container
    /// endpoint or IMDS busy): no broker saw a token, so not a refusal;
    /// tried again.
    #[error("cluster {cluster}{}: {detail}", at_broker(broker))]
    Credentials {
        /// Cluster alias.
        cluster: String,
        /// Broker address (empty before one is contacted).
        broker: String,
        /// The provider's cause (never a credential).
        detail: String,
    },
    /// A secret with the cluster's credentials or CA could not be used.
    #[error("the secret {arn} for cluster {cluster} {detail}")]
    Secret {
        /// Cluster alias.
        cluster: String,
        /// The secret's ARN.
        arn: String,
        /// What is wrong with it (never its value).
        detail: String,
        /// Secrets Manager did not answer, or answered that it is busy:
        /// worth trying again soon, unlike a refusal or a bad secret.
        transient: bool,
    },
    /// Not connecting yet: an authentication failure is still fresh.
    #[error("{last} (Ferry waits {seconds} s before connecting to cluster {cluster} again)")]
    AuthBackoff {
        /// Cluster alias.
        cluster: String,
        /// The failure that started the wait.
        last: String,
        /// Seconds left.
        seconds: u64,
    },
    /// An MSK cluster's brokers could not be looked up (GetBootstrapBrokers).
    #[error("cluster {cluster}: the brokers of MSK cluster {arn} could not be looked up: {detail}")]
    MskBootstrap {
        /// Cluster alias.
        cluster: String,
        /// The cluster's ARN.
        arn: String,
        /// What is wrong and how to fix it.
        detail: String,
        /// Whether trying again can help.
        fault: LookupFault,
    },
    /// The broker answered with an error code.
    #[error("{op} for {topic}-{partition} on cluster {cluster} failed: {error} ({detail})")]
    Broker {
        /// Cluster alias.
        cluster: String,
        /// Operation (Fetch, Produce, ...).
        op: &'static str,
        /// Topic.
        topic: String,
        /// Partition (-1 for topic-level errors).
        partition: i32,
        /// Kafka's error.
        error: ResponseError,
        /// Broker's message or context.
        detail: String,
    },
    /// A topic or partition the work needs is missing.
    #[error("topic {topic} partition {partition} does not exist on cluster {cluster}")]
    UnknownPartition {
        /// Cluster alias.
        cluster: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A fetched batch could not be read.
    #[error("{topic}-{partition} on cluster {cluster}: {source}")]
    Batch {
        /// Cluster alias.
        cluster: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Cause.
        source: BatchError,
    },
}

/// Why an MSK cluster's brokers could not be looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFault {
    /// No answer in time, throttled, or a fault on AWS's side: try again.
    Transient,
    /// IAM refused Ferry's role the call: a deployment's grant is missing.
    Denied,
    /// The definition does not fit the cluster (it lacks the listener of
    /// the configured authentication, or there is no such cluster): a
    /// configuration error, not worth trying again.
    Misconfigured,
}

fn at_broker(broker: &str) -> String {
    if broker.is_empty() {
        String::new()
    } else {
        format!(" (broker {broker})")
    }
}

impl KafkaError {
    pub(crate) fn protocol(broker: &str, detail: impl Into<String>) -> Self {
        KafkaError::Protocol {
            broker: broker.to_owned(),
            detail: detail.into(),
        }
    }

    /// Whether the fault passes on its own within seconds (a broker
    /// restarting, a leader moving): worth trying again soon, after
    /// refreshing metadata and reconnecting.
    pub fn is_transient(&self) -> bool {
        match self {
            KafkaError::Connect { .. }
            | KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::NoBroker { .. }
            | KafkaError::Throttled { .. }
            | KafkaError::NoRecordsBelowEnd { .. }
            | KafkaError::Credentials { .. } => true,
            KafkaError::Broker { error, .. } => {
                error.is_retriable()
                    || matches!(
                        error,
                        ResponseError::NotLeaderOrFollower
                            | ResponseError::LeaderNotAvailable
                            | ResponseError::FencedLeaderEpoch
                            | ResponseError::UnknownLeaderEpoch
                            | ResponseError::NotEnoughReplicas
                            | ResponseError::NotEnoughReplicasAfterAppend
                            | ResponseError::RequestTimedOut
                            | ResponseError::NetworkException
                            | ResponseError::CoordinatorLoadInProgress
                    )
            }
            KafkaError::Secret { transient, .. } | KafkaError::Tls { transient, .. } => *transient,
            KafkaError::MskBootstrap { fault, .. } => *fault == LookupFault::Transient,
            KafkaError::Auth { .. }
            | KafkaError::AuthBackoff { .. }
            | KafkaError::Unsupported { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Undecodable { .. }
            | KafkaError::UnknownPartition { .. }
            | KafkaError::Batch { .. } => false,
        }
    }

    /// Whether trying again may succeed at all: a transient fault, or
    /// credentials, certificates and secrets, which get fixed (or rotated)
    /// without Ferry being restarted. Those are tried again after a wait
    /// that grows (see `KafkaCluster`), never in a tight loop.
    pub fn is_retryable(&self) -> bool {
        self.is_transient()
            || matches!(
                self,
                KafkaError::Tls { .. } | KafkaError::Auth { .. } | KafkaError::Secret { .. } | KafkaError::AuthBackoff { .. }
            )
    }

    /// Whether the broker throttles Ferry's client for a quota (see
    /// `throttle.rs`): the connection and the leaders it knows stand.
    pub fn is_throttled(&self) -> bool {
        matches!(self, KafkaError::Throttled { .. })
    }

    /// Whether a fetch asked for an offset the partition no longer (or
    /// does not yet) hold.
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(
            self,
            KafkaError::Broker {
                error: ResponseError::OffsetOutOfRange,
                ..
            }
        )
    }

    /// Whether the broker refused a topic's replication factor (more
    /// replicas than it has brokers, or fewer than its minimum).
    pub fn refuses_replication_factor(&self) -> bool {
        matches!(
            self,
            KafkaError::Broker {
                error: ResponseError::InvalidReplicationFactor,
                ..
            }
        )
    }

    /// Whether the broker refused because Ferry's user lacks a grant.
    pub fn is_authorization(&self) -> bool {
        matches!(
            self,
            KafkaError::Broker {
                error: ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed,
                ..
            }
        )
    }

    /// How a broker refused a produce, if it answered with an error code.
    pub fn produce_refusal(&self) -> Option<ProduceRefusal> {
        let KafkaError::Broker { error, .. } = self else { return None };
        Some(match error {
            ResponseError::OutOfOrderSequenceNumber
            | ResponseError::UnknownProducerId
            | ResponseError::InvalidProducerEpoch
            | ResponseError::ProducerFenced => ProduceRefusal::ProducerState,
            ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => ProduceRefusal::TooLarge,
            ResponseError::InvalidTimestamp => ProduceRefusal::Timestamp,
            ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed => ProduceRefusal::NotAuthorized,
            ResponseError::InvalidRecord | ResponseError::CorruptMessage => ProduceRefusal::InvalidRecords,
            _ => ProduceRefusal::Other,
        })
    }

    /// Whether the broker refused a group operation because the group has
    /// live members: an admin offset commit (generation -1, no member id) to a
    /// group that is not empty is refused with one of these codes.
    pub fn is_group_active_error(&self) -> bool {
        matches!(
            self,
            KafkaError::Broker {
                error: ResponseError::UnknownMemberId
                    | ResponseError::IllegalGeneration
                    | ResponseError::RebalanceInProgress
                    | ResponseError::StaleMemberEpoch
                    | ResponseError::FencedMemberEpoch
                    | ResponseError::FencedInstanceId
                    | ResponseError::UnreleasedInstanceId,
                ..
            }
        )
    }

    /// Whether Ferry could not get in at all: the broker refused its
    /// credentials, TLS failed, or the secret holding them was refused or
    /// unusable (after one fresh read of it, see `KafkaCluster`). A
    /// scheduled invocation stops at once on it (`Ferry.AuthError`, not
    /// retried by the state machine) instead of spending its time on
    /// retries that cannot succeed until someone fixes it; a long-running
    /// `ferry run` waits and tries again, for a rotation to finish.
    pub fn is_refusal(&self) -> bool {
        // Not AuthBackoff: a wait left by an earlier refusal (perhaps an
        // earlier invocation of a warm function) says nothing of whether the
        // credentials were fixed since; it is retried after the wait.
        matches!(self, KafkaError::Auth { .. })
            || matches!(
                self,
                KafkaError::Tls { transient: false, .. }
                    | KafkaError::Secret { transient: false, .. }
                    | KafkaError::MskBootstrap {
                        fault: LookupFault::Denied,
                        ..
                    }
            )
    }

    /// A copy of this error when it is a refusal (`is_refusal`), to end an
    /// invocation with after the partition that met it has stopped.
    pub fn refusal_copy(&self) -> Option<KafkaError> {
        if !self.is_refusal() {
            return None;
        }
        Some(match self {
            KafkaError::Auth { cluster, broker, detail } => KafkaError::Auth {
                cluster: cluster.clone(),
                broker: broker.clone(),
                detail: detail.clone(),
            },
            KafkaError::Tls {
                cluster,
                broker,
                detail,
                transient,
            } => KafkaError::Tls {
                cluster: cluster.clone(),
                broker: broker.clone(),
                detail: detail.clone(),
                transient: *transient,
            },
            KafkaError::Secret {
                cluster,
                arn,
                detail,
                transient,
            } => KafkaError::Secret {
                cluster: cluster.clone(),
                arn: arn.clone(),
                detail: detail.clone(),
                transient: *transient,
            },
            KafkaError::MskBootstrap {
                cluster,
                arn,
                detail,
                fault,
            } => KafkaError::MskBootstrap {
                cluster: cluster.clone(),
                arn: arn.clone(),
                detail: detail.clone(),
                fault: *fault,
            },
            _ => return None,
        })
    }

    /// Whether the definition does not fit the cluster: an MSK cluster
    /// without the listener of the configured authentication, or no such
    /// cluster. A configuration error (`Ferry.ConfigError`), not retried.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            KafkaError::MskBootstrap {
                fault: LookupFault::Misconfigured,
                ..
            }
        )
    }

    /// The cluster that refused Ferry, for a refusal (`is_refusal`).
    pub fn refusing_cluster(&self) -> Option<&str> {
        match self {
            KafkaError::Tls { cluster, .. }
            | KafkaError::Auth { cluster, .. }
            | KafkaError::Secret { cluster, .. }
            | KafkaError::MskBootstrap { cluster, .. }
                if self.is_refusal() =>
            {
                Some(cluster)
            }
            _ => None,
        }
    }

    /// Whether the broker refused Ferry's credentials or permissions (the
    /// AuthError metric): retrying will not help until someone fixes them.
    pub fn is_auth_error(&self) -> bool {
        matches!(
            self,
            KafkaError::Tls { .. } | KafkaError::Auth { .. } | KafkaError::Secret { .. } | KafkaError::AuthBackoff { .. }
        ) || matches!(
            self,
            KafkaError::MskBootstrap {
                fault: LookupFault::Denied,
                ..
            }
        ) || matches!(
            self,
            KafkaError::Broker {
                error: ResponseError::SaslAuthenticationFailed
                    | ResponseError::IllegalSaslState
                    | ResponseError::UnsupportedSaslMechanism
                    | ResponseError::ClusterAuthorizationFailed
                    | ResponseError::TopicAuthorizationFailed
                    | ResponseError::GroupAuthorizationFailed
                    | ResponseError::TransactionalIdAuthorizationFailed,
                ..
            }
        )
    }

    /// Whether the cached connection should be dropped.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            KafkaError::Io { .. }
                | KafkaError::Timeout { .. }
                | KafkaError::Protocol { .. }
                | KafkaError::Undecodable { .. }
                | KafkaError::Connect { .. }
                | KafkaError::Tls { .. }
                | KafkaError::Auth { .. }
                | KafkaError::Credentials { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_passes_keeps_the_connection_and_says_which_client_id() {
        let throttled = KafkaError::Throttled {
            cluster: "target".into(),
            broker: "b:9092".into(),
            client_id: "ferry-target".into(),
            what: "Produce request not sent".into(),
            wait_ms: 21_000,
        };
        assert!(throttled.is_transient() && throttled.is_retryable() && throttled.is_throttled());
        assert!(!throttled.breaks_connection() && !throttled.is_refusal());
        assert!(throttled.to_string().contains("ferry-target") && throttled.to_string().contains("quota"));
        let empty = KafkaError::NoRecordsBelowEnd {
            cluster: "target".into(),
            topic: "t".into(),
            partition: 0,
            offset: 100,
            end: 150,
        };
        assert!(empty.is_transient() && !empty.breaks_connection() && !empty.is_throttled());
    }

    #[test]
    fn refused_credentials_are_retried_later_never_soon() {
        let auth = KafkaError::Auth {
            cluster: "source".into(),
            broker: "b:9096".into(),
            detail: "wrong password".into(),
        };
        assert!(auth.is_retryable() && !auth.is_transient() && auth.is_auth_error() && auth.is_refusal());
        let secret = |transient| KafkaError::Secret {
            cluster: "source".into(),
            arn: "arn:aws:secretsmanager:us-east-1:1:secret:s-AbCdEf".into(),
            detail: "cannot be read".into(),
            transient,
        };
        // Refused or unusable: a refusal. Throttled or unanswered: try again.
        assert!(secret(false).is_refusal() && !secret(false).is_transient());
        assert!(!secret(true).is_refusal() && secret(true).is_transient() && secret(true).is_retryable());
        // A wait left by an earlier refusal (a warm function's last
        // invocation) is not itself a refusal: the fix may have come since.
        let waiting = KafkaError::AuthBackoff {
            cluster: "source".into(),
            last: "wrong password".into(),
            seconds: 8,
        };
        assert!(!waiting.is_refusal() && waiting.is_retryable());
        let tls = |transient| KafkaError::Tls {
            cluster: "source".into(),
            broker: "b:9096".into(),
            detail: "handshake".into(),
            transient,
        };
        assert!(tls(false).is_refusal() && !tls(true).is_refusal() && tls(true).is_transient());
        let io = KafkaError::Io {
            broker: "b:9092".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert!(io.is_retryable() && io.is_transient() && !io.is_auth_error());
        let moved = KafkaError::Broker {
            cluster: "source".into(),
            op: "ListOffsets",
            topic: "t".into(),
            partition: 0,
            error: ResponseError::NotLeaderOrFollower,
            detail: String::new(),
        };
        assert!(moved.is_transient());
        let denied = KafkaError::Broker {
            cluster: "source".into(),
            op: "Metadata",
            topic: "t".into(),
            partition: -1,
            error: ResponseError::TopicAuthorizationFailed,
            detail: String::new(),
        };
        assert!(!denied.is_transient() && !denied.is_retryable() && denied.is_auth_error());
        let lookup = |fault| KafkaError::MskBootstrap {
            cluster: "target".into(),
            arn: "arn:aws:kafka:us-east-1:1:cluster/t/u-1".into(),
            detail: String::new(),
            fault,
        };
        // No IAM listener: the definition's to fix, not retried, no AuthError.
        let missing = lookup(LookupFault::Misconfigured);
        assert!(missing.is_misconfiguration() && !missing.is_retryable() && !missing.is_refusal() && !missing.is_auth_error());
        // IAM refused the call: a refusal, counted in AuthError.
        let refused = lookup(LookupFault::Denied);
        assert!(refused.is_refusal() && !refused.is_retryable() && refused.is_auth_error());
        assert_eq!(refused.refusing_cluster(), Some("target"));
        // Throttled or unanswered: tried again.
        let busy = lookup(LookupFault::Transient);
        assert!(busy.is_transient() && busy.is_retryable() && !busy.is_refusal() && !busy.is_misconfiguration());
    }
}
