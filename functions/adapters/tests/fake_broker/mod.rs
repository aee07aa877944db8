//! A scripted Kafka broker's wire for tests that play one: read a request's
//! header (and the body after it), write a response with its header. Shared
//! by the tests that pin Ferry's side of the SASL exchange.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
