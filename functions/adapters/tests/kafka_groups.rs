//! Consumer-group operations of Ferry's wire client against a real broker
//! (the local stack's source cluster), cross-checked with confluent-kafka
//! (librdkafka), a client nobody here wrote: it produces, joins a group,
//! consumes and commits offsets with metadata; Ferry reads them, is refused
//! while the consumer is joined, rewrites them once it left, and Python's
//! AdminClient reads Ferry's commit back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use ferry_adapters::kafka::{Committed, GroupState, KafkaCluster};
use ferry_core::domain::TopicPartition;

fn bootstrap() -> String {
    std::env::var("SOURCE_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The project venv's Python (FERRY_VENV, as `infra/local/up` exports it).
fn python() -> PathBuf {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv"));
    let py = venv.join("bin/python");
    assert!(py.exists(), "no Python at {} (run infra/local/up, or set FERRY_VENV)", py.display());
    py
}

/// Produces 5 records to each of the topic's 2 partitions, joins the group
/// with the given protocol, consumes all 10, commits offsets with metadata,
/// prints them and READY, stays joined until it reads "close" on stdin, then
/// closes (leaving the group) and prints CLOSED.
const CONSUMER: &str = r#"
import sys, time
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, topic, group, protocol = sys.argv[1:5]
p = Producer({"bootstrap.servers": bootstrap})
for part in (0, 1):
    for i in range(5):
        p.produce(topic, key=b"k%d" % i, value=b"v%d-%d" % (part, i), partition=part)
if p.flush(30) != 0:
    sys.exit("records not delivered")

c = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "group.protocol": protocol,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
})
c.subscribe([topic])
last = {}
seen = 0
deadline = time.time() + 60
while seen < 10:
    if time.time() > deadline:
        sys.exit("timed out consuming (seen %d)" % seen)
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        raise KafkaException(m.error())
    seen += 1
    last[m.partition()] = (m.offset(), m.leader_epoch())

# Partition 0 all consumed, partition 1 only up to offset 3.
commits = [
    TopicPartition(topic, 0, last[0][0] + 1, "py-meta-0", last[0][1]),
    TopicPartition(topic, 1, 3, "py-meta-1", last[1][1]),
]
for tp in c.commit(offsets=commits, asynchronous=False):
    if tp.error:
        raise KafkaException(tp.error)
for tp in commits:
    epoch = -1 if tp.leader_epoch is None else tp.leader_epoch
    print("COMMITTED\t%s\t%d\t%d\t%d\t%s" % (tp.topic, tp.partition, tp.offset, epoch, tp.metadata), flush=True)
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() == "close":
        break
c.close()
print("CLOSED", flush=True)
"#;

/// Prints the cluster id and the group's committed offsets as the
/// AdminClient sees them.
const ADMIN: &str = r#"
import sys
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

bootstrap, group = sys.argv[1:3]
a = AdminClient({"bootstrap.servers": bootstrap})
print("CLUSTER\t%s" % a.describe_cluster(request_timeout=30).result().cluster_id, flush=True)
futures = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], require_stable=True, request_timeout=30)
for res in futures.values():
    for tp in res.result().topic_partitions:
        if tp.error:
            sys.exit("offset error %s" % tp.error)
        epoch = -1 if tp.leader_epoch is None else tp.leader_epoch
        print("OFFSET\t%s\t%d\t%d\t%d\t%s" % (tp.topic, tp.partition, tp.offset, epoch, tp.metadata or ""), flush=True)
"#;

/// A `<TAG>\ttopic\tpartition\toffset\tepoch\tmetadata` line.
fn parse_offset(line: &str) -> (TopicPartition, Committed) {
    let f: Vec<&str> = line.splitn(6, '\t').collect();
    assert_eq!(f.len(), 6, "bad line from Python: {line:?}");
    let num = |s: &str| s.parse::<i64>().unwrap_or_else(|e| panic!("bad number {s:?} in {line:?}: {e}"));
    (
        TopicPartition::new(f[1], num(f[2]) as i32),
        Committed {
            offset: num(f[3]),
            leader_epoch: num(f[4]) as i32,
            metadata: Some(f[5].to_owned()),
        },
    )
}

/// The Python consumer, joined to its group until `close`.
struct PyConsumer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PyConsumer {
    /// Start it and wait until it committed; returns what it committed.
    fn start(topic: &str, group: &str, protocol: &str) -> (Self, BTreeMap<TopicPartition, Committed>) {
        let mut child = Command::new(python())
            .args(["-c", CONSUMER, &bootstrap(), topic, group, protocol])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python consumer");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("consumer stdout"));
        let mut me = Self { child, stdin, stdout };
        let mut committed = BTreeMap::new();
        loop {
            let line = me.line();
            if line == "READY" {
                break;
            }
            if line.starts_with("COMMITTED\t") {
                let (tp, mut c) = parse_offset(&line);
                // confluent-kafka-python hands librdkafka the metadata with
                // its C string terminator counted in, so the NUL reaches the
                // broker as part of the metadata.
                c.metadata = c.metadata.map(|m| format!("{m}\0"));
                committed.insert(tp, c);
            }
        }
        (me, committed)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read from the Python consumer");
        assert!(n > 0, "the Python consumer exited early: {:?}", self.child.try_wait());
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Close the consumer (it leaves the group) and wait for it to exit.
    fn close(mut self) {
        let mut stdin = self.stdin.take().expect("consumer stdin");
        writeln!(stdin, "close").expect("tell the consumer to close");
        drop(stdin);
        while self.line() != "CLOSED" {}
        let status = self.child.wait().expect("wait for the consumer");
        assert!(status.success(), "the Python consumer failed: {status}");
    }
}

impl Drop for PyConsumer {
    fn drop(&mut self) {
        // Only a consumer left behind by a failed assertion is still running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Cluster id and committed offsets of `group`, as the AdminClient reads them.
fn python_admin(group: &str) -> (String, BTreeMap<TopicPartition, Committed>) {
    let out = Command::new(python())
        .args(["-c", ADMIN, &bootstrap(), group])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the Python admin client");
    assert!(out.status.success(), "the Python admin client failed: {}", out.status);
    let mut cluster = String::new();
    let mut offsets = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(id) = line.strip_prefix("CLUSTER\t") {
            cluster = id.to_owned();
        } else if line.starts_with("OFFSET\t") {
            let (tp, c) = parse_offset(line);
            offsets.insert(tp, c);
        }
    }
    (cluster, offsets)
}

async fn setup(prefix: &str) -> (KafkaCluster, String, String) {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let topic = unique(prefix);
    cluster
        .create_topics(&[(topic.clone(), 2)])
        .await
        .expect("create topic (is the stack up? run infra/local/up)");
    let tps = [TopicPartition::new(topic.clone(), 0), TopicPartition::new(topic.clone(), 1)];
    for _ in 0..50 {
        if cluster.leaders(&tps).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, topic, unique(&format!("{prefix}-group")))
}

async fn wait_inactive(cluster: &KafkaCluster, group: &str) -> GroupState {
    let mut state = cluster.group_state(group).await.expect("group state");
    for _ in 0..100 {
        if !state.is_active() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = cluster.group_state(group).await.expect("group state");
    }
    state
}

/// Ferry's new offsets: partition 0 rewound to 2 (leader epoch kept),
/// partition 1 moved to 4 with an unknown epoch.
fn ferry_offsets(topic: &str, from_python: &BTreeMap<TopicPartition, Committed>) -> BTreeMap<TopicPartition, Committed> {
    let p0 = TopicPartition::new(topic, 0);
    let p1 = TopicPartition::new(topic, 1);
    BTreeMap::from([
        (
            p0.clone(),
            Committed {
                offset: 2,
                metadata: Some("ferry-meta-0".into()),
                leader_epoch: from_python[&p0].leader_epoch,
            },
        ),
        (
            p1,
            Committed {
                offset: 4,
                metadata: Some("ferry meta 1".into()),
                leader_epoch: -1,
            },
        ),
    ])
}

/// The whole life of a group, under `protocol` ("classic" or "consumer").
async fn group_lifecycle(prefix: &str, protocol: &str, group_type: &str) {
    let (cluster, topic, group) = setup(prefix).await;
    let (consumer, from_python) = PyConsumer::start(&topic, &group, protocol);
    assert_eq!(from_python.len(), 2, "the consumer committed both partitions");

    // Listed, with its type and protocol type.
    let groups = cluster.list_groups().await.expect("list groups");
    let listed = groups
        .iter()
        .find(|g| g.group_id == group)
        .unwrap_or_else(|| panic!("{group} not in {groups:?}"));
    assert_eq!(listed.protocol_type, "consumer", "{listed:?}");
    assert_eq!(listed.group_type, group_type, "{listed:?}");
    assert_eq!(listed.state, "Stable", "{listed:?}");

    // Ferry reads exactly what librdkafka committed, metadata and epochs included.
    assert_eq!(cluster.committed_offsets(&group).await.expect("committed offsets"), from_python);

    // Joined: active, and an admin commit is refused per partition.
    let state = cluster.group_state(&group).await.expect("group state");
    assert!(state.is_active(), "{state:?}");
    assert_eq!(state.members, 1, "{state:?}");
    // Named as an operator finds it: librdkafka's default client id, its member id, its host.
    assert!(
        state.clients.len() == 1 && state.clients[0].starts_with("rdkafka (") && state.clients[0].contains(") on "),
        "{state:?}"
    );
    let new = ferry_offsets(&topic, &from_python);
    let refused = cluster.commit_offsets(&group, &new).await.expect("commit request");
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (tp, res) in &refused {
        let err = res.as_ref().expect_err("a commit into an active group is refused");
        assert!(err.is_group_active_error(), "{tp}: {err}");
        eprintln!("[{protocol}] commit into the active group refused: {err}");
    }
    assert_eq!(cluster.committed_offsets(&group).await.expect("committed offsets"), from_python);

    // Left: inactive, and the admin commit goes through.
    consumer.close();
    let state = wait_inactive(&cluster, &group).await;
    assert!(!state.is_active(), "{state:?}");
    assert_eq!(state.members, 0, "{state:?}");
    assert_eq!(state.state, "Empty", "{state:?}");
    let done = cluster.commit_offsets(&group, &new).await.expect("commit request");
    assert_eq!(done.len(), 2, "{done:?}");
    for (tp, res) in &done {
        assert!(res.is_ok(), "{tp}: {res:?}");
    }
    assert_eq!(cluster.committed_offsets(&group).await.expect("committed offsets"), new);

    // And librdkafka's AdminClient sees Ferry's commit, metadata and epochs included.
    let (cluster_id, from_admin) = python_admin(&group);
    assert_eq!(from_admin, new);
    assert_eq!(cluster.cluster_id().await.expect("cluster id"), cluster_id);
}

#[tokio::test]
async fn classic_group_offsets_read_refused_while_joined_then_written() {
    group_lifecycle("groups-classic", "classic", "classic").await;
}

#[tokio::test]
async fn consumer_protocol_group_offsets_read_refused_while_joined_then_written() {
    group_lifecycle("groups-kip848", "consumer", "consumer").await;
}

#[tokio::test]
async fn missing_group_is_dead_and_cluster_id_is_stable() {
    let cluster = KafkaCluster::new("source", vec![bootstrap()], Duration::from_secs(10));
    let group = unique("groups-missing");
    let state = cluster.group_state(&group).await.expect("group state");
    assert_eq!(
        state,
        GroupState {
            state: "Dead".into(),
            members: 0,
            clients: Vec::new(),
        }
    );
    assert!(!state.is_active());
    assert!(cluster.committed_offsets(&group).await.expect("committed offsets").is_empty());
    assert!(!cluster
        .list_groups()
        .await
        .expect("list groups")
        .iter()
        .any(|g| g.group_id == group));

    let id = cluster.cluster_id().await.expect("cluster id");
    assert!(!id.is_empty());
    assert_eq!(cluster.cluster_id().await.expect("cluster id again"), id);
}
