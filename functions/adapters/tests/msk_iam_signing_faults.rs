//! A fault of the credentials provider while an MSK IAM token is signed is
//! not the broker refusing Ferry; and a broker that refuses a token and then
//! closes the connection has still refused it.
//!
//! When the credentials provider (the container endpoint, IMDS, STS) times
//! out or is throttled, no broker saw a token: the failure must be
//! transient (tried again, `Ferry.Retryable`), never `KafkaError::Auth`
//! (a refusal: `Ferry.AuthError`, not retried, counted in AuthError).
//!
//! The "broker" is a local socket that answers ApiVersions and the OAUTHBEARER
//! handshake, as the IAM listener does, and records whether any
//! SaslAuthenticate (a token) ever reached it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use fake_broker::{answer_before_token, listen, msk_iam, read_request, respond};
use ferry_adapters::kafka::connection::Connection;
use ferry_adapters::kafka::error::KafkaError;
use kafka_protocol::messages::ApiKey;
use tokio::net::TcpListener;

mod fake_broker;

/// An IAM listener up to the handshake; counts SaslAuthenticate requests.
async fn iam_listener(listener: TcpListener, tokens_seen: Arc<AtomicUsize>) {
    let Ok((mut sock, _)) = listener.accept().await else { return };
    while let Some((header, _)) = read_request(&mut sock).await {
        if answer_before_token(&mut sock, &header).await {
            continue;
        }
        match ApiKey::try_from(header.request_api_key) {
            Ok(ApiKey::SaslAuthenticate) => {
                tokens_seen.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => return,
        }
    }
}

/// A credentials provider that fails as the container endpoint, IMDS or STS
/// does when it is slow or busy.
#[derive(Debug)]
struct Failing(fn() -> CredentialsError);

impl ProvideCredentials for Failing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err((self.0)()))
    }
}

async fn connect_with(provider: Failing) -> (KafkaError, usize) {
    let (listener, addr) = listen().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let broker = tokio::spawn(iam_listener(listener, seen.clone()));
    let resolved = msk_iam(SharedCredentialsProvider::new(provider));
    let res = Connection::connect(&addr, "msk-target", "ferry-test", Duration::from_secs(5), &resolved).await;
    let err = res.expect_err("no credentials, no login");
    broker.abort();
    (err, seen.load(Ordering::SeqCst))
}

/// A credentials provider that timed out: transient, not a refusal, and the
/// broker never saw a token.
#[tokio::test]
async fn credentials_provider_timing_out_while_signing_is_not_a_refusal() {
    let (err, tokens) = connect_with(Failing(|| CredentialsError::provider_timed_out(Duration::from_secs(5)))).await;
    assert_eq!(tokens, 0, "the broker never saw a token");
    eprintln!(
        "error: {err}\nis_refusal={} is_transient={} is_auth_error={}",
        err.is_refusal(),
        err.is_transient(),
        err.is_auth_error()
    );
    assert!(
        !err.is_refusal(),
        "a credentials provider that timed out is not the broker refusing Ferry, yet it is a refusal \
         (Ferry.AuthError, not retried; AuthError metric): {err}"
    );
    assert!(
        err.is_transient(),
        "a timed-out credentials fetch should be tried again soon: {err}"
    );
}

/// STS throttling the credentials fetch: not a refusal, and the message
/// keeps the provider's cause.
#[tokio::test]
async fn sts_throttling_while_signing_is_not_a_refusal() {
    let (err, tokens) = connect_with(Failing(|| {
        CredentialsError::provider_error("ThrottlingException: Rate exceeded (AssumeRoleWithWebIdentity)")
    }))
    .await;
    assert_eq!(tokens, 0, "the broker never saw a token");
    eprintln!("error: {err}\nis_refusal={} is_transient={}", err.is_refusal(), err.is_transient());
    assert!(
        !err.is_refusal() && err.is_transient(),
        "STS throttling the credentials fetch is not the broker refusing Ferry, yet it is a refusal: {err}"
    );
    assert!(
        err.to_string().contains("ThrottlingException: Rate exceeded"),
        "the provider's cause is lost: {err}"
    );
}

/// A broker that refuses the token by sending its reason (RFC 7628) and then
/// closes the connection instead of waiting for the client's %x01.
async fn refuse_then_close(listener: TcpListener) {
    let Ok((mut sock, _)) = listener.accept().await else { return };
    while let Some((header, _)) = read_request(&mut sock).await {
        if answer_before_token(&mut sock, &header).await {
            continue;
        }
        match ApiKey::try_from(header.request_api_key) {
            Ok(ApiKey::SaslAuthenticate) => {
                let reason = r#"{"status":"invalid_token: access denied","scope":"kafka-cluster:Connect"}"#;
                let resp =
                    kafka_protocol::messages::SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from_static(reason.as_bytes()));
                respond(&mut sock, &header, &resp).await;
                return; // closes the socket
            }
            _ => return,
        }
    }
}

/// A broker that sends its OAUTHBEARER reason and closes before the
/// client's %x01: a refusal with that reason, not an I/O fault.
#[tokio::test]
async fn a_refusal_whose_broker_closes_before_the_final_x01_is_still_a_refusal() {
    let (listener, addr) = listen().await;
    let broker = tokio::spawn(refuse_then_close(listener));
    let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "not-a-real-secret-key", None, None, "test");
    let resolved = msk_iam(SharedCredentialsProvider::new(creds));
    let err = Connection::connect(&addr, "msk-target", "ferry-test", Duration::from_secs(5), &resolved)
        .await
        .expect_err("refused");
    broker.abort();
    eprintln!("error: {err}\nis_refusal={} is_transient={}", err.is_refusal(), err.is_transient());
    assert!(
        matches!(err, KafkaError::Auth { .. }) && err.to_string().contains("access denied"),
        "the broker sent its reason, then closed: still a refusal with that reason, not a connection fault retried \
         as if the broker were down: {err}"
    );
}
