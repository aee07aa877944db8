//! The brokers of an Amazon MSK cluster given by its ARN alone, looked up
//! with MSK's GetBootstrapBrokers for the listener of the authentication
//! Ferry uses (see `ferry_core::config::msk`).
//!
//! The client is MSK's API client from the shared AWS configuration (the
//! same endpoint override and timeouts as DynamoDB and Secrets Manager,
//! see `crate::aws`), in the cluster's own region, from its ARN.

use aws_sdk_kafka::operation::get_bootstrap_brokers::GetBootstrapBrokersOutput;
use ferry_core::config::msk::{MskListener, MskLookup};

use crate::kafka::error::LookupFault;
use crate::kafka::KafkaError;

/// Looks an MSK cluster's bootstrap brokers up.
#[derive(Debug, Clone)]
pub struct MskBootstrap {
    client: aws_sdk_kafka::Client,
    lookup: MskLookup,
}

impl MskBootstrap {
    /// For `lookup`, through MSK's API in the cluster's region.
    pub fn new(lookup: MskLookup, aws: &aws_config::SdkConfig) -> Self {
        let conf = aws_sdk_kafka::config::Builder::from(aws)
            .region(aws_config::Region::new(lookup.region.clone()))
            .build();
        Self {
            client: aws_sdk_kafka::Client::from_conf(conf),
            lookup,
        }
    }

    /// The cluster's ARN.
    pub fn arn(&self) -> &str {
        &self.lookup.arn
    }

    /// The listener looked up.
    pub fn listener(&self) -> MskListener {
        self.lookup.listener
    }

    /// `host:port` of the bootstrap brokers of the listener, for `cluster`
    /// (the alias, in errors).
    pub async fn brokers(&self, cluster: &str) -> Result<Vec<String>, KafkaError> {
        let arn = &self.lookup.arn;
        let error = |fault, detail: String| KafkaError::MskBootstrap {
            cluster: cluster.to_owned(),
            arn: arn.clone(),
            detail,
            fault,
        };
        let out = self.client.get_bootstrap_brokers().cluster_arn(arn).send().await.map_err(|e| {
            use aws_sdk_kafka::error::ProvideErrorMetadata;
            let status = e.raw_response().map(|r| r.status().as_u16());
            let fault = if crate::aws::is_transient(&e) {
                LookupFault::Transient
            } else {
                fault_of(e.code(), status)
            };
            let fix = crate::aws::unreachable_hint(&e, "kafka").unwrap_or_else(|| match fault {
                LookupFault::Denied => format!(
                    "Ferry's role needs kafka:GetBootstrapBrokers on {arn} (the template grants it on the ARNs of \
                     MskBootstrapLookupArns, which `ferry deploy-parameters` fills)"
                ),
                _ => format!(
                    "check the ARN (region {}, account, name and uuid as `aws kafka list-clusters-v2` shows it), or give the \
                     cluster's BootstrapBrokerString in kafka-clusters.json",
                    self.lookup.region
                ),
            });
            let e = crate::aws::describe(&e);
            error(fault, format!("GetBootstrapBrokers failed ({e}); {fix}"))
        })?;
        let listener = self.lookup.listener;
        let found = pick(listener, &out).ok_or_else(|| {
            error(
                LookupFault::Misconfigured,
                format!(
                    "the cluster has no {}: GetBootstrapBrokers returned no {}, the listener of the authentication \
                     kafka-clusters.json gives the cluster. Fix: {}",
                    listener.describe(),
                    listener.field(),
                    listener.fix()
                ),
            )
        })?;
        let brokers: Vec<String> = found
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect();
        if brokers.is_empty() {
            return Err(error(
                LookupFault::Transient,
                format!("GetBootstrapBrokers returned an empty {}", listener.field()),
            ));
        }
        tracing::info!(cluster, arn = %arn, field = listener.field(), brokers = %brokers.join(","), "MSK bootstrap brokers looked up");
        Ok(brokers)
    }
}

/// The bootstrap string of `listener` in GetBootstrapBrokers' answer: the
/// private one (the functions run in the cluster's VPC).
pub fn pick(listener: MskListener, out: &GetBootstrapBrokersOutput) -> Option<&str> {
    match listener {
        MskListener::Plaintext => out.bootstrap_broker_string(),
        MskListener::Tls => out.bootstrap_broker_string_tls(),
        MskListener::SaslScram => out.bootstrap_broker_string_sasl_scram(),
        MskListener::SaslIam => out.bootstrap_broker_string_sasl_iam(),
    }
    .filter(|s| !s.trim().is_empty())
}

/// What an answer of MSK's API means for Ferry, from its error code and
/// HTTP status: IAM refused the call, or the request is wrong (no such
/// cluster, a cluster not ready, a malformed ARN). Anything else is
/// transient: throttling, a server fault, and an answer without a known
/// code (a 5xx from a gateway or proxy on the way has none). No answer at
/// all is transient too (`crate::aws::is_transient`).
pub fn fault_of(code: Option<&str>, status: Option<u16>) -> LookupFault {
    match code {
        Some("AccessDeniedException" | "ForbiddenException" | "UnauthorizedException" | "UnrecognizedClientException") => {
            LookupFault::Denied
        }
        Some("NotFoundException" | "BadRequestException" | "ValidationException" | "ConflictException") => LookupFault::Misconfigured,
        // A code MSK's API does not document, or none: wrong only when the
        // service said the request was (4xx other than throttling).
        Some(_) if status.is_some_and(|s| (400..500).contains(&s) && s != 429) => LookupFault::Misconfigured,
        _ => LookupFault::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_listener_of_the_authentication_is_taken() {
        let out = GetBootstrapBrokersOutput::builder()
            .bootstrap_broker_string("b-1:9092")
            .bootstrap_broker_string_tls("b-1:9094")
            .bootstrap_broker_string_sasl_scram("b-1:9096,b-2:9096")
            .bootstrap_broker_string_public_sasl_iam("b-1-public:9198")
            .build();
        assert_eq!(pick(MskListener::SaslScram, &out), Some("b-1:9096,b-2:9096"));
        assert_eq!(pick(MskListener::Tls, &out), Some("b-1:9094"));
        assert_eq!(pick(MskListener::Plaintext, &out), Some("b-1:9092"));
        // Public access alone is not the private IAM listener.
        assert_eq!(pick(MskListener::SaslIam, &out), None);
        let empty = GetBootstrapBrokersOutput::builder().bootstrap_broker_string_sasl_iam(" ").build();
        assert_eq!(pick(MskListener::SaslIam, &empty), None);
    }

    #[test]
    fn iam_refusals_are_told_from_wrong_requests() {
        assert_eq!(fault_of(Some("AccessDeniedException"), Some(403)), LookupFault::Denied);
        assert_eq!(fault_of(Some("ForbiddenException"), Some(403)), LookupFault::Denied);
        assert_eq!(fault_of(Some("NotFoundException"), Some(404)), LookupFault::Misconfigured);
        assert_eq!(fault_of(Some("BadRequestException"), Some(400)), LookupFault::Misconfigured);
    }

    /// A server fault without an error code (a gateway's 502 with an HTML
    /// body), an unknown code on a 5xx, or throttling: tried again, not a
    /// configuration error.
    #[test]
    fn server_faults_without_a_known_code_are_transient() {
        assert_eq!(fault_of(None, Some(502)), LookupFault::Transient);
        assert_eq!(fault_of(None, Some(503)), LookupFault::Transient);
        assert_eq!(fault_of(Some("SomethingNew"), Some(500)), LookupFault::Transient);
        assert_eq!(fault_of(Some("TooManyRequestsException"), Some(429)), LookupFault::Transient);
        assert_eq!(fault_of(None, None), LookupFault::Transient);
        assert_eq!(fault_of(Some("SomethingNew"), Some(400)), LookupFault::Misconfigured);
    }

    #[tokio::test]
    async fn the_lookup_shares_the_bounded_configuration_in_the_clusters_region() {
        let aws = crate::aws::load().await;
        let lookup = MskLookup {
            arn: "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1-2".into(),
            region: "eu-west-1".into(),
            listener: MskListener::SaslIam,
        };
        let m = MskBootstrap::new(lookup, &aws);
        let conf = m.client.config();
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        let t = conf.timeout_config().expect("a timeout config");
        assert_eq!(t.connect_timeout(), Some(crate::aws::CONNECT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(crate::aws::ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(crate::aws::OPERATION_TIMEOUT));
    }
}
