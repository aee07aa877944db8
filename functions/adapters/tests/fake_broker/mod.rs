//! A scripted Kafka broker's wire for tests that play one: read a request's
//! header (and the body after it), write a response with its header. Shared
//! by the tests that pin Ferry's side of the SASL exchange.

use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::{Bytes, BytesMut};
use ferry_adapters::kafka::security::{Resolved, SaslCredentials};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslHandshakeResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listener on a free local port, and its address.
pub async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    (listener, addr)
}

/// A client's security for an MSK IAM listener, signing with `credentials`.
pub fn msk_iam(credentials: SharedCredentialsProvider) -> Resolved {
    Resolved {
        tls: None,
        sasl: Some(SaslCredentials::MskIam {
            region: "us-east-1".into(),
            credentials,
        }),
    }
}

/// Answers `header`'s request as an MSK IAM listener does before the
/// token (ApiVersions, the OAUTHBEARER handshake); false for any other
/// request, left to the caller.
pub async fn answer_before_token(sock: &mut TcpStream, header: &RequestHeader) -> bool {
    match ApiKey::try_from(header.request_api_key) {
        Ok(ApiKey::ApiVersions) => {
            let resp = ApiVersionsResponse::default().with_api_keys(vec![
                version(ApiKey::ApiVersions, 3),
                version(ApiKey::SaslHandshake, 1),
                version(ApiKey::SaslAuthenticate, 2),
                version(ApiKey::Metadata, 12),
            ]);
            respond(sock, header, &resp).await;
            true
        }
        Ok(ApiKey::SaslHandshake) => {
            let resp = SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
            respond(sock, header, &resp).await;
            true
        }
        _ => false,
    }
}

/// The next request's header and body; None once the client has gone.
pub async fn read_request(sock: &mut TcpStream) -> Option<(RequestHeader, Bytes)> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    sock.read_exact(&mut buf).await.ok()?;
    let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).ok()?;
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let mut body = Bytes::from(buf);
    let header = RequestHeader::decode(&mut body, key.request_header_version(version)).ok()?;
    Some((header, body))
}

/// Writes `resp` as the answer to `header`'s request.
pub async fn respond<R: Encodable>(sock: &mut TcpStream, header: &RequestHeader, resp: &R) {
    let key = ApiKey::try_from(header.request_api_key).expect("known key");
    let version = header.request_api_version;
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut buf, key.response_header_version(version))
        .expect("header");
    resp.encode(&mut buf, version).expect("body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    sock.write_all(&out).await.expect("write");
}

/// An ApiVersions entry: `key` from version 0 to `max`.
pub fn version(key: ApiKey, max: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(key as i16)
        .with_min_version(0)
        .with_max_version(max)
}
