"""MirrorMaker 2 settings every benchmark needs on the local stack."""

# Single-broker clusters: every internal topic with replication factor 1. The
# worker's own bookkeeping topics are new for every run, so they get one
# partition each instead of 25 and 5, as nothing reads them but MM2.
SINGLE_BROKER = {
    "replication.factor": "1",
    "offset-syncs.topic.replication.factor": "1",
    "checkpoints.topic.replication.factor": "1",
    "heartbeats.topic.replication.factor": "1",
    "config.storage.replication.factor": "1",
    "offset.storage.replication.factor": "1",
    "status.storage.replication.factor": "1",
    "offset.storage.partitions": "1",
    "status.storage.partitions": "1",
}
