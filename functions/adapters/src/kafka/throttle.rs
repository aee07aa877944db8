//! Client quotas (KIP-219). A broker over a client's quota (bytes fetched
//! or produced a second, or a share of its request threads) still answers
//! at once, says in `throttle_time_ms` how long the client must keep
//! quiet, and mutes the connection for that long: a request sent sooner
//! waits unread in the broker's socket, and a client that counts its
//! request timeout from the send times out. A throttled fetch's answer
//! carries none of the partitions asked for. So every answer's throttle
//! time is read here, the connection waits it out before its next request
//! (as Kafka's own clients do) up to [`MAX_WAIT`], and a fetch whose answer
//! was throttled is asked again (see `KafkaCluster::fetch_capped`).

use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;

/// The longest throttle a connection waits out before its next request
/// (or the request timeout, if shorter). A longer one ends the request at
/// once with `KafkaError::Throttled`, a passing error: no request waits
/// long enough to run a Lambda invocation past its deadline, and a group
/// sync's commit counts this wait in its margin.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// A request whose response may carry a throttle time.
pub trait Throttled: Request {
    /// Milliseconds the broker asks the client to wait before its next
    /// request on this connection (0: none).
    fn throttle_ms(response: &Self::Response) -> i32;
}

macro_rules! throttled {
    ($($request:ident => $response:ident),* $(,)?) => {
        $(impl Throttled for $request {
            fn throttle_ms(response: &$response) -> i32 {
                response.throttle_time_ms
            }
        })*
    };
}

throttled!(
    AddPartitionsToTxnRequest => AddPartitionsToTxnResponse,
    ApiVersionsRequest => ApiVersionsResponse,
    ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse,
    CreateAclsRequest => CreateAclsResponse,
    CreatePartitionsRequest => CreatePartitionsResponse,
    CreateTopicsRequest => CreateTopicsResponse,
    DeleteTopicsRequest => DeleteTopicsResponse,
    DescribeAclsRequest => DescribeAclsResponse,
    DescribeConfigsRequest => DescribeConfigsResponse,
    DescribeGroupsRequest => DescribeGroupsResponse,
    EndTxnRequest => EndTxnResponse,
    FetchRequest => FetchResponse,
    FindCoordinatorRequest => FindCoordinatorResponse,
    IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse,
    InitProducerIdRequest => InitProducerIdResponse,
    ListGroupsRequest => ListGroupsResponse,
    ListOffsetsRequest => ListOffsetsResponse,
    MetadataRequest => MetadataResponse,
    OffsetCommitRequest => OffsetCommitResponse,
    OffsetFetchRequest => OffsetFetchResponse,
    OffsetForLeaderEpochRequest => OffsetForLeaderEpochResponse,
    ProduceRequest => ProduceResponse,
);

/// The SASL exchange's answers carry no throttle time.
impl Throttled for SaslHandshakeRequest {
    fn throttle_ms(_: &SaslHandshakeResponse) -> i32 {
        0
    }
}

impl Throttled for SaslAuthenticateRequest {
    fn throttle_ms(_: &SaslAuthenticateResponse) -> i32 {
        0
    }
}
