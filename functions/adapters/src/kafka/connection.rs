//! One connection to one broker: TLS, SASL authentication (and
//! re-authentication before the session the broker granted ends, KIP-368),
//! framing, correlation ids, version negotiation. Every Kafka API Ferry
//! uses goes through here, with requests and responses encoded by
//! `kafka-protocol`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::error::KafkaError;
use super::scram::ScramClient;
use super::security::{describe_tls_failure, msk_iam_client_response, tls_failure_is_transient, Resolved, SaslCredentials, SigningFault};
use super::throttle::Throttled;

/// Largest response Ferry accepts (a fetch is bounded well below this).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The highest version of each API Ferry speaks. Fetch and Produce stop
/// before the versions that name topics by id only.
fn ferry_max_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::ApiVersions => 3,
        ApiKey::Metadata => 12,
        ApiKey::Fetch => 12,
        // 13 names topics by id (KIP-516): a write is refused, not
        // appended, when its topic was deleted and created again. 12 adds
        // nothing Ferry uses (implicit transaction partitions, KIP-890).
        ApiKey::Produce => 13,
        ApiKey::ListOffsets => 7,
        ApiKey::OffsetForLeaderEpoch => 4,
        ApiKey::CreateTopics => 7,
        ApiKey::InitProducerId => 4,
        // Transactions as clients before Kafka 4.0 run them (KIP-890's
        // second part, where the produce adds the partition, is not used).
        ApiKey::AddPartitionsToTxn => 3,
        ApiKey::EndTxn => 4,
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
        ApiKey::SaslHandshake => 1,
        ApiKey::SaslAuthenticate => 2,
        _ => 0,
    }
}

/// A byte stream to a broker: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connected, authenticated, version-negotiated broker connection.
pub struct Connection {
    addr: String,
    cluster: String,
    stream: BufReader<Box<dyn Stream>>,
    next_correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
    client_id: StrBytes,
    request_timeout: Duration,
    sasl: Option<SaslCredentials>,
    /// When to authenticate again: before the session the broker granted ends.
    reauth_at: Option<Instant>,
    /// Until when the broker throttles this client (a quota, see
    /// `throttle.rs`): it reads nothing more from this connection before.
    quiet_until: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).finish()
    }
}

impl Connection {
    /// Connect to `addr` of cluster `cluster` (its alias, for errors), set
    /// up TLS and negotiate API versions, then authenticate.
    pub async fn connect(
        addr: &str,
        cluster: &str,
        client_id: &str,
        request_timeout: Duration,
        security: &Resolved,
    ) -> Result<Self, KafkaError> {
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
        let stream: Box<dyn Stream> = match &security.tls {
            None => Box::new(tcp),
            Some(config) => {
                let tls_error = |detail: String, transient: bool| KafkaError::Tls {
                    cluster: cluster.to_owned(),
                    broker: addr.to_owned(),
                    detail,
                    transient,
                };
                let host = host_of(addr);
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| tls_error(format!("{host:?} is not a host name TLS can check"), false))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp);
                Box::new(
                    tokio::time::timeout(request_timeout, tls)
                        .await
                        .map_err(|_| KafkaError::Timeout {
                            broker: addr.to_owned(),
                            what: "TLS handshake".into(),
                        })?
                        .map_err(|e| tls_error(describe_tls_failure(&e), tls_failure_is_transient(&e)))?,
                )
            }
        };
        let mut conn = Self {
            addr: addr.to_owned(),
            cluster: cluster.to_owned(),
            stream: BufReader::with_capacity(256 * 1024, stream),
            next_correlation: 1,
            versions: HashMap::new(),
            client_id: StrBytes::from_string(client_id.to_owned()),
            request_timeout,
            sasl: security.sasl.clone(),
            reauth_at: None,
            quiet_until: None,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ferry"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.roundtrip(&req, 3).await.map_err(|e| match (&e, security.tls.is_some()) {
            // A TLS client reading a PLAINTEXT listener (or the reverse)
            // gets garbage or a closed socket, not an answer.
            (KafkaError::Io { .. } | KafkaError::Protocol { .. } | KafkaError::Undecodable { .. }, false) => KafkaError::Protocol {
                broker: addr.to_owned(),
                detail: format!("{e}; is this a TLS listener? then set EncryptionType TLS"),
            },
            _ => e,
        })?;
        if resp.error_code != 0 {
            return Err(KafkaError::protocol(
                addr,
                format!("ApiVersions failed with error code {}", resp.error_code),
            ));
        }
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        conn.authenticate().await?;
        Ok(conn)
    }

    /// SASL: handshake, then the mechanism's exchange. Remembers when the
    /// broker wants the next one.
    async fn authenticate(&mut self) -> Result<(), KafkaError> {
        let Some(creds) = self.sasl.clone() else {
            return Ok(());
        };
        self.reauth_at = None;
        let mechanism = creds.mechanism();
        let version = self.version_for::<SaslHandshakeRequest>()?;
        let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let hs: SaslHandshakeResponse = self.roundtrip(&req, version).await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(self.auth_error(format!(
                "this listener does not enable {mechanism} (it offers {offered:?}): use the mechanism the user's credential was made for, or another listener"
            )));
        }
        let lifetime_ms = match creds {
            SaslCredentials::Scram { hash, username, password } => {
                let mut scram = ScramClient::new(hash, &username, password.expose());
                let first = self.sasl_round(scram.client_first()).await?;
                let fin = scram.client_final(&first.auth_bytes).map_err(|e| self.auth_error(e.to_string()))?;
                let last = self.sasl_round(fin).await?;
                scram
                    .verify_server_final(&last.auth_bytes)
                    .map_err(|e| self.auth_error(e.to_string()))?;
                last.session_lifetime_ms
            }
            SaslCredentials::MskIam { region, credentials } => {
                let msg = msk_iam_client_response(&region, credentials).await.map_err(|e| match e {
                    // No broker saw a token: not a refusal, tried again.
                    SigningFault::Credentials(detail) => KafkaError::Credentials {
                        cluster: self.cluster.clone(),
                        broker: self.addr.clone(),
                        detail,
                    },
                    SigningFault::Token(detail) => self.auth_error(detail),
                })?;
                let resp = self.sasl_round(msg.expose().as_bytes().to_vec()).await?;
                if !resp.auth_bytes.is_empty() {
                    // OAUTHBEARER (RFC 7628): a broker that refuses the token
                    // answers with its reason (a JSON status) instead of an
                    // error, and waits for the client's %x01 before failing
                    // the exchange. Taken for a success, the next request
                    // would find the connection closed: a refusal retried as
                    // if the broker were down.
                    // The broker's answer to the %x01 is its refusal
                    // (SaslAuthenticationFailed and its message). A broker
                    // that closes the connection instead refused all the
                    // same: then the reason it sent is the cause, not the
                    // I/O error.
                    let reason = String::from_utf8_lossy(&resp.auth_bytes).into_owned();
                    if let Err(e @ KafkaError::Auth { .. }) = self.sasl_round(vec![0x01]).await {
                        return Err(e);
                    }
                    return Err(self.auth_error(format!("the broker refused the token: {reason}; {}", self.sasl_fix())));
                }
                resp.session_lifetime_ms
            }
        };
        // Again at 85% of the session, as Kafka's own clients do.
        self.reauth_at = u64::try_from(lifetime_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms * 85 / 100));
        Ok(())
    }

    /// How to fix a refused login, for the mechanism in use.
    fn sasl_fix(&self) -> &'static str {
        match &self.sasl {
            Some(SaslCredentials::MskIam { .. }) => {
                "check that Ferry signs with its own role's credentials, that the region in the cluster's MskClusterArn is the \
                 cluster's (the token is signed for it), that this machine's clock is right (a token is valid for 15 minutes \
                 from signing), and that the role may kafka-cluster:Connect to this cluster with IAM access control on for it"
            }
            _ => "check the user name and password in the cluster's secret (Ferry reads it again on its next connection)",
        }
    }

    async fn sasl_round(&mut self, auth_bytes: Vec<u8>) -> Result<SaslAuthenticateResponse, KafkaError> {
        let fix = self.sasl_fix();
        let version = self.version_for::<SaslAuthenticateRequest>()?;
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(auth_bytes));
        let resp: SaslAuthenticateResponse = self.roundtrip(&req, version).await?;
        if resp.error_code != 0 {
            let error =
                ResponseError::try_from_code(resp.error_code).map_or_else(|| format!("error code {}", resp.error_code), |e| format!("{e}"));
            let said = resp.error_message.as_ref().map(|m| format!(": {}", m.as_str())).unwrap_or_default();
            return Err(self.auth_error(format!("{error}{said}; {fix}")));
        }
        Ok(resp)
    }

    fn auth_error(&self, detail: String) -> KafkaError {
        KafkaError::Auth {
            cluster: self.cluster.clone(),
            broker: self.addr.clone(),
            detail,
        }
    }

    /// Whether the session the broker granted is (nearly) over: the next
    /// request must authenticate again first (KIP-368).
    pub fn session_ending(&self) -> bool {
        self.reauth_at.is_some_and(|at| Instant::now() >= at)
    }

    /// Authenticate again on this connection, before its session ends.
    pub async fn reauthenticate(&mut self) -> Result<(), KafkaError> {
        // Boxed: a deep future (SCRAM, or signing an IAM token), and rare.
        Box::pin(self.authenticate()).await
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send a request at the highest version both sides speak and wait for
    /// its response.
    pub async fn send<R: Throttled>(&mut self, req: &R) -> Result<R::Response, KafkaError> {
        self.send_built::<R, &R>(|_| req).await
    }

    /// Like `send`, for requests whose shape depends on the version: `build`
    /// gets the negotiated version and returns the request to encode at it.
    pub async fn send_built<R: Throttled, Q: Borrow<R>>(&mut self, build: impl FnOnce(i16) -> Q) -> Result<R::Response, KafkaError> {
        if self.session_ending() {
            self.reauthenticate().await?;
        }
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

    async fn roundtrip<R: Throttled>(&mut self, req: &R, version: i16) -> Result<R::Response, KafkaError> {
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
        if let Some(until) = self.quiet_until {
            // The broker would leave the request unread until then, and the
            // request timeout counts from the send: waited out, unless it is
            // longer than a request may wait (a quota far below what Ferry
            // asks for throttles for minutes).
            let left = until.saturating_duration_since(Instant::now());
            if left > self.request_timeout.min(super::throttle::MAX_WAIT) {
                return Err(KafkaError::Throttled {
                    cluster: self.cluster.clone(),
                    broker: self.addr.clone(),
                    client_id: self.client_id.to_string(),
                    what: ApiKey::try_from(R::KEY)
                        .map_or_else(|_| format!("request {} not sent", R::KEY), |k| format!("{k:?} request not sent")),
                    wait_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                });
            }
            tokio::time::sleep(left).await;
            self.quiet_until = None;
        }
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
        let resp = R::Response::decode(&mut body, version).map_err(|e| KafkaError::Undecodable {
            broker: addr.clone(),
            api: ApiKey::try_from(R::KEY).map_or_else(|_| format!("API {}", R::KEY), |k| format!("{k:?}")),
            version,
            detail: e.to_string(),
        })?;
        if body.has_remaining() {
            tracing::debug!(broker = %addr, left = body.remaining(), "response had trailing bytes");
        }
        if let Ok(ms @ 1..) = u64::try_from(R::throttle_ms(&resp)) {
            self.quiet_until = Some(Instant::now() + Duration::from_millis(ms));
        }
        Ok(resp)
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(super::host_of("localhost:9096"), "localhost");
        assert_eq!(
            super::host_of("b-1.example.kafka.eu-west-1.amazonaws.com:9098"),
            "b-1.example.kafka.eu-west-1.amazonaws.com"
        );
        assert_eq!(super::host_of("[::1]:9092"), "::1");
    }
}
