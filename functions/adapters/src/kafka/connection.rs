//! One connection to one broker: framing, correlation ids, version
//! negotiation. Every Kafka API Ferry uses goes through here, with requests
//! and responses encoded by `kafka-protocol`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::error::KafkaError;

/// Largest response Ferry accepts (a fetch is bounded well below this).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The highest version of each API Ferry speaks. Fetch and Produce stop
/// before the versions that name topics by id only.
fn ferry_max_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::ApiVersions => 3,
        ApiKey::Metadata => 12,
        ApiKey::Fetch => 12,
        ApiKey::Produce => 11,
        ApiKey::ListOffsets => 7,
        ApiKey::CreateTopics => 7,
        ApiKey::InitProducerId => 4,
        ApiKey::DescribeConfigs => 4,
        ApiKey::CreatePartitions => 3,
        ApiKey::IncrementalAlterConfigs => 1,
        ApiKey::FindCoordinator => 6,
        ApiKey::ListGroups => 5,
        ApiKey::DescribeGroups => 6,
        ApiKey::ConsumerGroupDescribe => 1,
        ApiKey::OffsetFetch => 9,
        ApiKey::OffsetCommit => 9,
        ApiKey::DescribeAcls => 3,
        ApiKey::DeleteTopics => 5,
        ApiKey::CreateAcls => 3,
        _ => 0,
    }
}

/// A connected, version-negotiated broker connection.
pub struct Connection {
    addr: String,
    stream: BufReader<TcpStream>,
    next_correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
    client_id: StrBytes,
    request_timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).finish()
    }
}

impl Connection {
    /// Connect and negotiate API versions.
    pub async fn connect(addr: &str, client_id: &str, request_timeout: Duration) -> Result<Self, KafkaError> {
        let tcp = tokio::time::timeout(request_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::Timeout {
                broker: addr.to_owned(),
                what: "connect".into(),
            })?
            .map_err(|source| KafkaError::Connect {
                broker: addr.to_owned(),
                source,
            })?;
        tcp.set_nodelay(true).ok();
        let mut conn = Self {
            addr: addr.to_owned(),
            stream: BufReader::with_capacity(256 * 1024, tcp),
            next_correlation: 1,
            versions: HashMap::new(),
            client_id: StrBytes::from_static_str("ferry"),
            request_timeout,
        };
        conn.client_id = StrBytes::from_string(client_id.to_owned());
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ferry"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.roundtrip(&req, 3).await?;
        if resp.error_code != 0 {
            return Err(KafkaError::protocol(
                addr,
                format!("ApiVersions failed with error code {}", resp.error_code),
            ));
        }
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(conn)
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send a request at the highest version both sides speak and wait for
    /// its response.
    pub async fn send<R: Request>(&mut self, req: &R) -> Result<R::Response, KafkaError> {
        self.send_built::<R, &R>(|_| req).await
    }

    /// Like `send`, for requests whose shape depends on the version: `build`
    /// gets the negotiated version and returns the request to encode at it.
    pub async fn send_built<R: Request, Q: Borrow<R>>(&mut self, build: impl FnOnce(i16) -> Q) -> Result<R::Response, KafkaError> {
        let version = self.version_for::<R>()?;
        let req = build(version);
        self.roundtrip(req.borrow(), version).await
    }

    /// The version of `R` this connection sends: the highest both sides speak.
    pub fn version_for<R: Request>(&self) -> Result<i16, KafkaError> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| KafkaError::protocol(&self.addr, format!("unknown API key {}", R::KEY)))?;
        let (broker_min, broker_max) = self.versions.get(&R::KEY).copied().ok_or_else(|| KafkaError::Unsupported {
            broker: self.addr.clone(),
            api: format!("{key:?}"),
            detail: "not offered by the broker".into(),
        })?;
        let version = broker_max.min(ferry_max_version(key)).min(R::VERSIONS.max);
        if version < broker_min.max(R::VERSIONS.min) {
            return Err(KafkaError::Unsupported {
                broker: self.addr.clone(),
                api: format!("{key:?}"),
                detail: format!(
                    "broker speaks {broker_min}..{broker_max}, Ferry {}..{}",
                    R::VERSIONS.min,
                    ferry_max_version(key)
                ),
            });
        }
        Ok(version)
    }

    async fn roundtrip<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, KafkaError> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| KafkaError::protocol(&self.addr, format!("encoding request: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        let timeout = self.request_timeout;
        let addr = self.addr.clone();
        let io = async {
            self.stream.get_mut().write_all(&buf).await?;
            let size = self.stream.read_i32().await?;
            if size < 0 || size as usize > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response size {size}"),
                ));
            }
            let mut body = vec![0u8; size as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| KafkaError::Timeout {
                broker: addr.clone(),
                what: format!("{:?} request", ApiKey::try_from(R::KEY).ok()),
            })?
            .map_err(|source| KafkaError::Io {
                broker: addr.clone(),
                source,
            })?;
        let resp_header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| KafkaError::protocol(&addr, format!("decoding response header: {e}")))?;
        if resp_header.correlation_id != correlation_id {
            return Err(KafkaError::protocol(
                &addr,
                format!(
                    "correlation id {} does not match request {correlation_id}",
                    resp_header.correlation_id
                ),
            ));
        }
        let resp = R::Response::decode(&mut body, version).map_err(|e| KafkaError::protocol(&addr, format!("decoding response: {e}")))?;
        if body.has_remaining() {
            tracing::debug!(broker = %addr, left = body.remaining(), "response had trailing bytes");
        }
        Ok(resp)
    }
}
