//! The fingerprint that ties a deployed stack's parameters to its
//! definition layer: `ferry deploy-parameters` writes both from one pair of
//! files, and a function refuses a layer that is not the pair its
//! parameters were written for.

/// The definition's two files, as `create-replicator` names them: what the
/// layer holds and the functions read.
pub const KAFKA_CLUSTERS_FILE: &str = "kafka-clusters.json";
/// See [`KAFKA_CLUSTERS_FILE`].
pub const REPLICATION_INFO_FILE: &str = "replication-info.json";

/// SHA-256 (hex) of the two definition files, each length-prefixed so no
/// two different pairs share a fingerprint.
pub fn fingerprint(kafka_clusters: &str, replication_info: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [kafka_clusters, replication_info] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn a_byte_moved_between_the_files_changes_the_fingerprint() {
        let a = fingerprint("[1]", "[2]");
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint("[1]", "[2]"));
        assert_ne!(a, fingerprint("[1][", "2]"));
        assert_ne!(a, fingerprint("[1]", "[3]"));
    }
}
