//! `ferry deploy-parameters`: the `sam deploy` parameters for a replicator
//! definition, checked first: the definition itself, the MSK clusters the
//! template's IAM policy is scoped to, the secrets it may read, and where
//! the logs go (log-delivery.json).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_core::config::log_delivery::load_log_delivery;
use ferry_core::config::{ClusterAuth, ClusterSpec};

use crate::{load_definition, read, Definition};

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// kafka-clusters.json.
    #[arg(long, value_name = "FILE")]
    kafka_clusters: PathBuf,
    /// replication-info.json.
    #[arg(long, value_name = "FILE")]
    replication_info: PathBuf,
    /// log-delivery.json (ReplicatorLogDelivery: CloudWatchLogs, Firehose).
    #[arg(long, value_name = "FILE")]
    log_delivery: Option<PathBuf>,
    /// Replicator name.
    #[arg(long, default_value = "ferry")]
    name: String,
    /// Print a JSON object instead of the parameters file.
    #[arg(long)]
    json: bool,
    /// Write the parameters file here (YAML) instead of printing it; pass
    /// it on as `sam deploy --parameter-overrides file://<FILE>`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn is_msk(c: &ClusterSpec) -> bool {
    c.id.starts_with("arn:") && c.id.contains(":kafka:")
}

pub(crate) fn deploy_parameters(args: DeployArgs) -> Result<ExitCode, String> {
    let Definition {
        spec,
        clusters_json,
        info_json,
    } = load_definition(&args.name, &args.kafka_clusters, &args.replication_info)?;
    let mut params: BTreeMap<&str, String> = BTreeMap::new();
    params.insert("ReplicatorName", args.name.clone());
    params.insert("KafkaClustersJson", sam_safe_json(&clusters_json)?);
    params.insert("ReplicationInfoJson", sam_safe_json(&info_json)?);

    let mut clusters: Vec<&ClusterSpec> = Vec::new();
    for f in &spec.flows {
        for c in [&f.source, &f.target] {
            if !clusters.iter().any(|k| k.id == c.id) {
                clusters.push(c);
            }
        }
    }
    let first = &spec.flows[0];
    let msk: Vec<&&ClusterSpec> = clusters
        .iter()
        .filter(|c| is_msk(c) && matches!(c.auth, ClusterAuth::MskIam))
        .collect();
    if msk.len() > 2 {
        return Err(format!(
            "{} MSK clusters use IAM authentication; the template scopes its policy to two (source and target). Fix: deploy one stack per pair of clusters",
            msk.len()
        ));
    }
    for (key, c) in [("SourceMskClusterArn", &first.source), ("TargetMskClusterArn", &first.target)] {
        params.insert(
            key,
            if is_msk(c) && matches!(c.auth, ClusterAuth::MskIam) {
                c.id.clone()
            } else {
                String::new()
            },
        );
    }
    let mut secrets: Vec<String> = Vec::new();
    for c in &clusters {
        if let ClusterAuth::Scram { secret_arn, .. } = &c.auth {
            secrets.push(secret_arn.clone());
        }
        if let Some(ca) = c.tls.as_ref().and_then(|t| t.root_ca_secret_arn.clone()) {
            secrets.push(ca);
        }
    }
    secrets.sort();
    secrets.dedup();
    for arn in secrets.iter().filter(|a| !has_random_suffix(a)) {
        // Checked offline, so a warning and not a refusal: a secret whose
        // own name ends in six characters after a hyphen cannot be told apart.
        eprintln!(
            "ferry: warning: secret ARN {arn} has no random suffix (Secrets Manager adds six characters, as in {arn}-AbCdEf). \
             The API accepts it, but IAM matches the full ARN: the template grants {arn}-?????? for it as well. \
             Fix: copy the full ARN from `aws secretsmanager describe-secret --secret-id {arn} --query ARN`"
        );
    }
    params.insert("SecretArns", secrets.join(","));
    if let Some(path) = &args.log_delivery {
        let ld = load_log_delivery(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?;
        params.insert("LogGroupName", ld.log_group.unwrap_or_default());
        params.insert("LogFirehoseStreamName", ld.firehose_stream.unwrap_or_default());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&params).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    let file = parameters_yaml(&params);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &file).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "ferry: wrote {}. Deploy with: sam deploy --parameter-overrides file://{} (with --guided, answer the remaining \
                 questions: SubnetIds, SecurityGroupIds)",
                path.display(),
                path.display()
            );
        }
        None => {
            print!("{file}");
            eprintln!(
                "ferry: save this as ferry-parameters.yaml (or use --out) and deploy with: sam deploy --parameter-overrides \
                 file://ferry-parameters.yaml"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The parameters as the YAML file `sam deploy --parameter-overrides
/// file://...` reads: a mapping of single-quoted strings (no YAML
/// typing: `0123` stays a string). A value on the command line instead
/// would be cut by SAM CLI's own parser at its first double quote.
fn parameters_yaml(params: &BTreeMap<&str, String>) -> String {
    let mut out = String::from("# sam deploy --parameter-overrides file://<this file>; written by ferry deploy-parameters\n");
    for (k, v) in params {
        out.push_str(&format!("{k}: '{}'\n", v.replace('\'', "''")));
    }
    out
}

/// The JSON on one line (CloudFormation parameters are single strings),
/// written so that SAM CLI hands it over unchanged: it unescapes `\"`,
/// `\'` and `\ ` in every value, even one read from a file, so quotes,
/// apostrophes and backslashes inside JSON strings are written as
/// `\u0022`, `\u0027` and `\u005c`, which every JSON reader reads back
/// as the same characters.
fn sam_safe_json(json: &str) -> Result<String, String> {
    let compact = compact(json)?;
    let mut out = String::with_capacity(compact.len() + 16);
    let mut chars = compact.chars();
    let mut in_string = false;
    while let Some(ch) = chars.next() {
        match ch {
            '"' => {
                in_string = !in_string;
                out.push('"');
            }
            '\\' if in_string => match chars.next() {
                Some('"') => out.push_str("\\u0022"),
                Some('\\') => out.push_str("\\u005c"),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '\'' if in_string => out.push_str("\\u0027"),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Whether a Secrets Manager ARN ends with the `-` and six random
/// characters Secrets Manager appends to the secret's name. AWS's own
/// examples, and many hand-written configurations, leave them out.
fn has_random_suffix(arn: &str) -> bool {
    let name = arn.rsplit_once(":secret:").map_or(arn, |(_, n)| n);
    match name.rsplit_once('-') {
        Some((head, tail)) => !head.is_empty() && tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_alphanumeric()),
        None => false,
    }
}

/// The JSON on one line: CloudFormation parameters are single strings.
fn compact(json: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::{has_random_suffix, sam_safe_json};

    #[test]
    fn json_for_sam_has_no_backslash_before_a_quote_apostrophe_or_space_and_reads_back_the_same() {
        let json = r#"[{"Topics": ["orders\\.v1", "say \"hi\"", "it's", "back\\ slash", "tab\there"], "n": 1}]"#;
        let safe = sam_safe_json(json).expect("valid");
        for bad in ["\\\"", "\\'", "\\ "] {
            assert!(!safe.contains(bad), "{safe} contains {bad}");
        }
        assert!(!safe.contains('\''), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        let want: serde_json::Value = serde_json::from_str(json).expect("valid");
        assert_eq!(back, want);
    }

    #[test]
    fn secret_arns_without_their_random_suffix_are_recognised() {
        let base = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
        assert!(has_random_suffix(&format!("{base}prod/kafka-AbC12f")));
        assert!(!has_random_suffix(&format!("{base}prod/kafka")));
        assert!(!has_random_suffix(&format!("{base}prod/kafka-scram")));
        assert!(!has_random_suffix(&format!("{base}-AbC12f")));
        assert!(!has_random_suffix(&format!("{base}kafka-AbC1-f")));
    }
}
