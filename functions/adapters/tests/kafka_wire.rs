//! Ferry's wire client against a real broker (the local stack's source
//! cluster), cross-checked with rskafka, a client nobody here wrote.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_adapters::kafka::batch::{self, ProducerStamp, SourceRecord};
use ferry_adapters::kafka::{Isolation, KafkaCluster, OffsetSpec};
use ferry_core::config::Compression;
use ferry_core::domain::TopicPartition;

fn bootstrap() -> String {
    std::env::var("SOURCE_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn topic_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn varint(b: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

/// Key, value and one header, framed as a record tail.
fn tail(key: &[u8], value: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    varint(&mut b, key.len() as i64);
    b.put_slice(key);
    varint(&mut b, value.len() as i64);
    b.put_slice(value);
    varint(&mut b, 1);
    varint(&mut b, 1);
    b.put_slice(b"h");
    varint(&mut b, 2);
    b.put_slice(b"hv");
    b.freeze()
}

#[tokio::test]
async fn produce_idempotently_then_fetch_back_and_read_with_rskafka() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("wire");
    cluster
        .create_topics(&[(topic.clone(), 2)])
        .await
        .expect("create topic (is the stack up? run infra/local/up)");
    let tp = TopicPartition::new(topic.clone(), 1);
    let mut leader = None;
    for _ in 0..50 {
        if let Ok(l) = cluster.leaders(std::slice::from_ref(&tp)).await {
            leader = Some(l[&tp]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.expect("leader");
    let (pid, epoch) = cluster
        .init_transactional_producer(&format!("ferry-wire-{}", uuid::Uuid::new_v4().simple()))
        .await
        .expect("producer id");
    let recs: Vec<SourceRecord> = (0..5)
        .map(|i| SourceRecord {
            offset: i * 10,
            timestamp: 1_700_000_000_000 + i,
            attributes: 0,
            tail: tail(format!("k{i}").as_bytes(), b"value"),
        })
        .collect();
    let stamp = ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: 0,
    };
    let bytes = batch::build_batch(&recs, Compression::Zstd, stamp).expect("build");
    // A new partition's leader may not know it leads yet: retry as the replicator does.
    let mut first = None;
    for _ in 0..50 {
        let mut res = cluster
            .produce(leader, vec![(tp.clone(), bytes.clone())], 10_000)
            .await
            .expect("produce");
        match res.remove(&tp).expect("partition in response") {
            Ok(base) => {
                first = Some(base);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("produce failed: {e}"),
        }
    }
    assert_eq!(first, Some(0));
    // The same batch again (a retry after a lost response) is dropped by
    // the broker's idempotence: same base offset, no second copy.
    let again = cluster
        .produce(leader, vec![(tp.clone(), bytes)], 10_000)
        .await
        .expect("produce again");
    assert_eq!(again[&tp].as_ref().expect("partition ok"), &0);
    let end = cluster
        .list_offsets(std::slice::from_ref(&tp), OffsetSpec::Latest, true)
        .await
        .expect("offsets");
    assert_eq!(end[&tp], 5, "the retried batch must not be appended twice");

    let fetched = cluster
        .fetch(leader, &[(tp.clone(), 0)], 1 << 20, 100, Isolation::ReadCommitted)
        .await
        .expect("fetch");
    let f = fetched[&tp].as_ref().expect("partition ok");
    let batches = batch::split_batches(f.records.clone()).expect("split");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].header.producer_id, pid);
    let back = batch::records(&batches[0]).expect("records");
    assert_eq!(
        back.iter().map(|r| r.tail.clone()).collect::<Vec<_>>(),
        recs.iter().map(|r| r.tail.clone()).collect::<Vec<_>>()
    );
    assert_eq!(back.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);

    // An independent client reads the same records.
    let client = rskafka::client::ClientBuilder::new(vec![bootstrap()])
        .build()
        .await
        .expect("rskafka client");
    let pc = client
        .partition_client(topic.clone(), 1, rskafka::client::partition::UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let (got, hw) = pc.fetch_records(0, 1..1_000_000, 1_000).await.expect("rskafka fetch");
    assert_eq!(hw, 5);
    let keys: Vec<Vec<u8>> = got.iter().map(|r| r.record.key.clone().unwrap_or_default()).collect();
    assert_eq!(keys, (0..5).map(|i| format!("k{i}").into_bytes()).collect::<Vec<_>>());
    assert!(got.iter().all(|r| r.record.value.as_deref() == Some(&b"value"[..])));
    assert_eq!(got[3].record.timestamp.timestamp_millis(), 1_700_000_000_003);
}

#[tokio::test]
async fn unknown_topic_is_a_clear_error() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let tp = TopicPartition::new(topic_name("missing"), 0);
    let err = cluster
        .list_offsets(std::slice::from_ref(&tp), OffsetSpec::Latest, true)
        .await
        .expect_err("no such topic");
    assert!(err.to_string().contains(&tp.topic), "{err}");
}

#[tokio::test]
async fn unreachable_cluster_names_it() {
    let cluster = KafkaCluster::new("nowhere", vec!["127.0.0.1:1".into()], Duration::from_secs(2));
    let err = cluster.metadata(None).await.expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(err.is_retryable());
}

/// Why the replicator puts a partition that got nothing first in its next
/// fetch: a batch larger than the per-partition fetch size comes back only
/// to the first partition of the request that has data (KIP-74), and the
/// request goes out in the order given.
#[tokio::test]
async fn a_batch_larger_than_the_fetch_size_comes_back_only_to_the_first_partition_with_data() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("oversized");
    cluster
        .create_topics(&[(topic.clone(), 2)])
        .await
        .expect("create topic (is the stack up? run infra/local/up)");
    let (small, big) = (TopicPartition::new(topic.clone(), 0), TopicPartition::new(topic.clone(), 1));
    let (pid, epoch) = cluster
        .init_transactional_producer(&format!("ferry-wire-{}", uuid::Uuid::new_v4().simple()))
        .await
        .expect("producer id");
    let write = |tp: TopicPartition, value_len: usize| {
        let cluster = &cluster;
        async move {
            let rec = SourceRecord {
                offset: 0,
                timestamp: 1_700_000_000_000,
                attributes: 0,
                tail: tail(b"k", &vec![7u8; value_len]),
            };
            let stamp = ProducerStamp {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: 0,
            };
            let bytes = batch::build_batch(&[rec], Compression::None, stamp).expect("build");
            for _ in 0..50 {
                if let Ok(l) = cluster.leaders(std::slice::from_ref(&tp)).await {
                    let mut res = cluster
                        .produce(l[&tp], vec![(tp.clone(), bytes.clone())], 10_000)
                        .await
                        .expect("produce");
                    match res.remove(&tp).expect("partition in response") {
                        Ok(_) => return l[&tp],
                        Err(e) if e.is_retryable() => {}
                        Err(e) => panic!("produce failed: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{tp} never took a write");
        }
    };
    let leader = write(small.clone(), 100).await;
    assert_eq!(write(big.clone(), 50_000).await, leader, "one broker leads both");
    let max = 10_000;

    let res = cluster
        .fetch(leader, &[(small.clone(), 0), (big.clone(), 0)], max, 0, Isolation::ReadCommitted)
        .await
        .expect("fetch");
    let (s, b) = (res[&small].as_ref().expect("small ok"), res[&big].as_ref().expect("big ok"));
    assert!(!s.records.is_empty());
    assert!(
        b.records.is_empty() && b.last_stable_offset == 1,
        "second with data: nothing, though the log has a record"
    );

    let res = cluster
        .fetch(leader, &[(big.clone(), 0), (small.clone(), 0)], max, 0, Isolation::ReadCommitted)
        .await
        .expect("fetch");
    let b = res[&big].as_ref().expect("big ok");
    let batches = batch::split_batches(b.records.clone()).expect("split");
    assert_eq!(batches.len(), 1, "first: the whole oversized batch");
    assert!(batches[0].size > max as usize);
}

/// Produce one batch of `n` records with `stamp`, retrying while the
/// partition's leader settles; the broker's answer.
async fn produce_one(cluster: &KafkaCluster, tp: &TopicPartition, n: i64, stamp: ProducerStamp) -> Result<i64, String> {
    let recs: Vec<SourceRecord> = (0..n)
        .map(|i| SourceRecord {
            offset: i,
            timestamp: 1_700_000_000_000 + i,
            attributes: 0,
            tail: tail(format!("k{i}").as_bytes(), b"value"),
        })
        .collect();
    let bytes = batch::build_batch(&recs, Compression::None, stamp).expect("build");
    for _ in 0..50 {
        let Ok(leaders) = cluster.leaders(std::slice::from_ref(tp)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut res = cluster
            .produce(leaders[tp], vec![(tp.clone(), bytes.clone())], 10_000)
            .await
            .expect("produce");
        match res.remove(tp).expect("partition in response") {
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other.map_err(|e| e.to_string()),
        }
    }
    Err("no leader".into())
}

/// Fencing a transactional id's producer on one partition: that partition
/// refuses its old epoch from then on, another partition it wrote to does
/// not, and a partition that cannot be fenced is reported, not fatal.
#[tokio::test]
async fn a_fenced_producer_is_refused_on_the_fenced_partition_only() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("fence");
    cluster
        .create_topics(&[(topic.clone(), 2)])
        .await
        .expect("create topic (is the stack up? run infra/local/up)");
    let (fenced_tp, spared_tp) = (TopicPartition::new(topic.clone(), 0), TopicPartition::new(topic.clone(), 1));
    let id = format!("ferry-wire-{}", uuid::Uuid::new_v4().simple());
    let (pid, epoch) = cluster.init_transactional_producer(&id).await.expect("transactional producer id");
    let stamp = |seq| ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    for tp in [&fenced_tp, &spared_tp] {
        produce_one(&cluster, tp, 3, stamp(0)).await.expect("first write");
    }
    let missing = TopicPartition::new(topic_name("no-such-topic"), 0);
    let fenced = cluster.fence(&id, pid, &[fenced_tp.clone(), missing.clone()]).await.expect("fence");
    assert!(fenced.same_producer);
    assert_eq!(fenced.failed.len(), 1, "{:?}", fenced.failed);
    assert_eq!(fenced.failed[0].0, missing);
    let refused = produce_one(&cluster, &fenced_tp, 3, stamp(3)).await;
    let err = refused.expect_err("the fenced partition refuses the old epoch");
    assert!(err.contains("InvalidProducerEpoch") || err.contains("ProducerFenced"), "{err}");
    assert_eq!(
        produce_one(&cluster, &spared_tp, 3, stamp(3)).await,
        Ok(3),
        "the other partition still takes it"
    );
    let ends = cluster
        .list_offsets(std::slice::from_ref(&fenced_tp), OffsetSpec::Latest, false)
        .await
        .expect("offsets");
    assert_eq!(ends[&fenced_tp], 4, "three records and the fence's abort marker");
}

/// OffsetForLeaderEpoch as a consumer asks it (KIP-320): a single-broker
/// topic's only epoch ends at its log end; a fetched batch carries that
/// epoch in its header; an epoch the leader has not reached has no end.
#[tokio::test]
async fn where_a_leader_epoch_ends_and_the_epoch_a_batch_carries() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("epoch");
    cluster
        .create_topics(&[(topic.clone(), 1)])
        .await
        .expect("create topic (is the stack up? run infra/local/up)");
    let tp = TopicPartition::new(topic, 0);
    let stamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    produce_one(&cluster, &tp, 5, stamp).await.expect("first batch");
    produce_one(&cluster, &tp, 3, stamp).await.expect("second batch");
    let leader = cluster.leaders(std::slice::from_ref(&tp)).await.expect("leader")[&tp];
    let fetched = cluster
        .fetch(leader, &[(tp.clone(), 0)], 1 << 20, 0, Isolation::ReadCommitted)
        .await
        .expect("fetch")
        .remove(&tp)
        .expect("partition")
        .expect("records");
    let batches = batch::split_batches(fetched.records).expect("split");
    assert_eq!(batches.len(), 2);
    let epoch = batches[0].header.partition_leader_epoch;
    assert!(epoch >= 0, "the broker stamps its leader epoch: {epoch}");
    assert_eq!(batches[1].header.partition_leader_epoch, epoch);
    let end = cluster.offset_for_leader_epoch(&tp, epoch).await.expect("epoch end");
    assert_eq!(
        (end.leader_epoch, end.end_offset),
        (epoch, 8),
        "the current epoch ends at the log end"
    );
    // An epoch newer than any the leader has: it knows no end for it (-1),
    // which Ferry takes as nothing to compare, not as a truncation.
    let later = cluster.offset_for_leader_epoch(&tp, epoch + 5).await.expect("newer epoch");
    assert_eq!((later.leader_epoch, later.end_offset), (-1, -1));
}

/// Produce and fetch across partitions through the client's leader
/// routing: each partition's own result, in the order asked, whatever the
/// order of the partitions; a partition the cluster does not have fails
/// the call with its name.
#[tokio::test]
async fn produce_and_fetch_across_partitions_answer_each_in_the_order_asked() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("across");
    cluster.create_topics(&[(topic.clone(), 3)]).await.expect("create topic");
    let tps: Vec<TopicPartition> = [2, 0, 1].into_iter().map(|p| TopicPartition::new(topic.clone(), p)).collect();
    let (pid, epoch) = cluster
        .init_transactional_producer(&format!("ferry-across-{}", uuid::Uuid::new_v4().simple()))
        .await
        .expect("producer id");
    // Partition p gets p + 1 records.
    let batches: Vec<(TopicPartition, Bytes)> = tps
        .iter()
        .map(|tp| {
            let recs: Vec<SourceRecord> = (0..=i64::from(tp.partition))
                .map(|i| SourceRecord {
                    offset: i,
                    timestamp: 1_700_000_000_000 + i,
                    attributes: 0,
                    tail: tail(format!("p{}-{i}", tp.partition).as_bytes(), b"v"),
                })
                .collect();
            let stamp = ProducerStamp {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: 0,
            };
            (tp.clone(), batch::build_batch(&recs, Compression::None, stamp).expect("build"))
        })
        .collect();
    let mut produced = None;
    for _ in 0..50 {
        match cluster.produce_across(&batches, 10_000).await {
            Ok(res) if res.iter().all(Result::is_ok) => {
                produced = Some(res);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let produced = produced.expect("every partition produced");
    assert_eq!(
        produced.iter().map(|r| *r.as_ref().expect("produced")).collect::<Vec<_>>(),
        vec![0, 0, 0]
    );
    let positions: Vec<(TopicPartition, i64)> = tps.iter().map(|tp| (tp.clone(), 0)).collect();
    let fetched = cluster
        .fetch_across(&positions, (1 << 20, 4 << 20), 100, Isolation::ReadCommitted)
        .await
        .expect("fetch across");
    let counts: Vec<usize> = fetched
        .iter()
        .map(|f| {
            let f = f.as_ref().expect("partition ok");
            batch::split_batches(f.records.clone())
                .expect("split")
                .iter()
                .map(|b| b.header.records_count as usize)
                .sum()
        })
        .collect();
    assert_eq!(counts, vec![3, 1, 2], "each partition's records, in the order asked");
    let one = cluster
        .fetch_partition(&tps[0], 1, 1 << 20, Isolation::ReadCommitted)
        .await
        .expect("fetch one");
    assert!(!one.records.is_empty());
    let missing = TopicPartition::new(topic.clone(), 7);
    let err = cluster
        .fetch_across(
            &[(tps[0].clone(), 0), (missing, 0)],
            (1 << 20, 4 << 20),
            0,
            Isolation::ReadCommitted,
        )
        .await
        .expect_err("a partition the topic does not have");
    assert!(err.to_string().contains(topic.as_str()) && err.to_string().contains('7'), "{err}");
}

/// A client quota on `client_id`, set with Kafka's own ConfigCommand.
fn set_consume_quota(client_id: &str, bytes_per_s: u64) {
    let libs = std::env::var("KAFKA_LIBS").expect("KAFKA_LIBS (source infra/local/stack.env)");
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .args([
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            &bootstrap(),
            "--alter",
            "--entity-type",
            "clients",
        ])
        .args([
            "--entity-name",
            client_id,
            "--add-config",
            &format!("consumer_byte_rate={bytes_per_s}"),
        ])
        .output()
        .expect("java");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_read_of_one_partition_waits_out_throttles_longer_than_a_request_waits() {
    // A broker counts a consume quota over ~11 one-second windows, and a
    // throttled answer is not counted. At 2 KB/s, reads of 1 KB fill the
    // window; then a read of ~20 KB (alone within the quota) is throttled
    // for some seconds, past the 5 s a request waits before it is sent.
    // Ferry once took the throttled answer (no partitions) for "does not
    // exist"; `fetch_partition` now waits and returns the records.
    let alias = format!("quota-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let cluster = KafkaCluster::new(&alias, vec![bootstrap()], Duration::from_secs(10));
    let topic = topic_name("quota");
    cluster
        .create_topics(&[(topic.clone(), 1)])
        .await
        .expect("create topic (is the stack up?)");
    let tp = TopicPartition::new(topic.clone(), 0);
    let (pid, epoch) = cluster
        .init_transactional_producer(&format!("ferry-wire-{}", uuid::Uuid::new_v4().simple()))
        .await
        .expect("producer id");
    // 400 batches of one 200-byte record.
    let mut produced = 0;
    while produced < 400 {
        let recs = [SourceRecord {
            offset: 0,
            timestamp: 1_700_000_000_000,
            attributes: 0,
            tail: tail(format!("k{produced}").as_bytes(), &[b'v'; 200]),
        }];
        let stamp = ProducerStamp {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: produced,
        };
        let bytes = batch::build_batch(&recs, Compression::None, stamp).expect("build");
        match cluster.produce_across(&[(tp.clone(), bytes)], 5_000).await.expect("produce")[0] {
            Ok(_) => produced += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    set_consume_quota(&cluster.client_id(), 2_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pos = 0;
    let started = std::time::Instant::now();
    while cluster.throttle_ms() == 0 && started.elapsed() < Duration::from_secs(60) {
        let f = cluster
            .fetch_partition(&tp, pos, 1, Isolation::ReadUncommitted)
            .await
            .expect("a small read");
        pos = batch::split_batches(f.records)
            .expect("split")
            .last()
            .expect("a batch")
            .header
            .next_offset();
    }
    assert!(cluster.throttle_ms() > 0, "the window never filled");
    let before = cluster.throttle_ms();
    let f = cluster
        .fetch_partition(&tp, pos, 20_000, Isolation::ReadUncommitted)
        .await
        .expect("the records, after the throttle");
    let batches = batch::split_batches(f.records).expect("split");
    assert_eq!(batches.first().map(|b| b.header.base_offset), Some(pos));
    let during = cluster.throttle_ms() - before;
    println!("throttled {before} ms before this read, {during} ms during it");
    assert!(
        during > 5_000,
        "throttled for more than one request waits ({during} ms), else this proves little"
    );

    // The rest in one read: throttled for longer than a read waits. While
    // the connection is muted, a metadata request (any broker may answer
    // it: here the one broker) is refused unsent, and the error names the
    // throttle, not "no broker answered".
    let rest = batches.last().expect("a batch").header.next_offset();
    let cluster = std::sync::Arc::new(cluster);
    let (reader, rtp) = (cluster.clone(), tp.clone());
    let throttled_read = tokio::spawn(async move { reader.fetch_partition(&rtp, rest, 1_000_000, Isolation::ReadUncommitted).await });
    let started = std::time::Instant::now();
    let refused = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match cluster.metadata(None).await {
            Err(e) => break e,
            Ok(_) if started.elapsed() < Duration::from_secs(10) => continue,
            Ok(_) => panic!("the long read never muted the connection"),
        }
    };
    throttled_read.abort();
    assert!(refused.is_throttled(), "{refused}");
    assert!(refused.to_string().contains(&cluster.client_id()), "{refused}");
}
