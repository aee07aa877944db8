//! An MSK IAM (SASL OAUTHBEARER) refusal as a Kafka broker sends it
//! (RFC 7628): the SaslAuthenticate answer carries no error but the reason,
//! a JSON status, and the broker waits for the client's %x01 before it
//! fails the exchange with the same words. Ferry must end the exchange and
//! fail with an authentication error that holds the reason, not take the
//! reason for a success (its next request would find the connection closed,
//! a refusal retried as if the broker were down). The "broker" is a local
//! socket playing that script; the real one is in tests/e2e/test_msk_iam.py.

use std::time::Duration;

use bytes::Bytes;
use fake_broker::{answer_before_token, listen, msk_iam, read_request, respond};
use ferry_adapters::kafka::connection::Connection;
use ferry_adapters::kafka::error::KafkaError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::net::TcpListener;

mod fake_broker;

const REASON: &str = r#"{"status":"invalid_token: the token has expired", "scope":"kafka-cluster:Connect"}"#;

/// Plays a broker that refuses every token; returns the auth bytes of the
/// client's second SaslAuthenticate, if it sent one.
async fn refusing_broker(listener: TcpListener) -> Option<Bytes> {
    let (mut sock, _) = listener.accept().await.ok()?;
    let mut second = None;
    let mut authenticates = 0;
    while let Some((header, mut body)) = read_request(&mut sock).await {
        if answer_before_token(&mut sock, &header).await {
            continue;
        }
        match ApiKey::try_from(header.request_api_key).ok()? {
            ApiKey::SaslAuthenticate => {
                let req = SaslAuthenticateRequest::decode(&mut body, header.request_api_version).ok()?;
                authenticates += 1;
                let resp = if authenticates == 1 {
                    // The token: refused by sending the reason back.
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from_static(REASON.as_bytes()))
                } else {
                    second = Some(req.auth_bytes.clone());
                    SaslAuthenticateResponse::default()
                        .with_error_code(58) // SASL_AUTHENTICATION_FAILED
                        .with_error_message(Some(StrBytes::from_static_str(REASON)))
                };
                respond(&mut sock, &header, &resp).await;
            }
            // Anything else during authentication: a broker closes the connection.
            _ => return second,
        }
    }
    second
}

#[tokio::test]
async fn a_refused_token_ends_the_exchange_and_fails_with_the_reason() {
    let (listener, addr) = listen().await;
    let broker = tokio::spawn(refusing_broker(listener));
    let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "not-a-real-secret-key", None, None, "test");
    let resolved = msk_iam(aws_credential_types::provider::SharedCredentialsProvider::new(creds));
    let res = Connection::connect(&addr, "msk-target", "ferry-test", Duration::from_secs(5), &resolved).await;
    let err = res.expect_err("a refused token is not a login");
    assert!(
        matches!(err, KafkaError::Auth { .. }),
        "an authentication error, not a connection fault: {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("cluster msk-target"), "{text}");
    assert!(text.contains("the token has expired"), "the broker's reason: {text}");
    assert!(text.contains("this machine's clock"), "the fix: {text}");
    assert!(!text.contains("not-a-real-secret-key"), "{text}");
    let second = tokio::time::timeout(Duration::from_secs(5), broker)
        .await
        .expect("broker done")
        .expect("broker task");
    assert_eq!(
        second.as_deref(),
        Some(&[0x01u8][..]),
        "the client ends a refused exchange with %x01"
    );
}
