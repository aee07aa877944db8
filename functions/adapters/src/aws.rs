//! The AWS SDK configuration every Ferry client shares (DynamoDB, Secrets
//! Manager, CloudWatch, Step Functions).
//!
//! The SDK sets no operation or attempt timeout by default, so a call to an
//! endpoint that accepts the connection and then never answers (a black-holed
//! route, a stuck proxy, a dropped NAT entry) waits for ever, and so does the
//! replicator. Every call is bounded here; a timed-out call is an ordinary
//! transient failure that Ferry's own retries and leases already handle.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

/// How long to wait for a TCP/TLS connection to an AWS endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt (one HTTP request) may take. Ferry's calls are small
/// (one DynamoDB item, a page of at most 1 MB, one secret, one metric batch).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one operation may take, retries by the SDK included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeouts above.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK configuration from the standard AWS environment (region,
/// credentials, `AWS_ENDPOINT_URL`), with every call bounded.
pub async fn load() -> aws_config::SdkConfig {
    aws_config::from_env().timeout_config(timeouts()).load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loaded_config_bounds_every_call() {
        let aws = load().await;
        let t = aws.timeout_config().expect("a timeout config");
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
    }
}
