//! `ferry deploy-parameters`: the `sam deploy` parameters for a replicator
//! definition, checked first: the definition itself, the MSK clusters the
//! template's IAM policy is scoped to (and those whose brokers are looked
//! up), the secrets it may read, and where the logs go (log-delivery.json).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// Where to write the definition the stack's DefinitionLayer packages:
    /// the folder `ferry-definition/` beside template.yaml.
    #[arg(long, value_name = "DIR", default_value = "ferry-definition")]
    definition_dir: PathBuf,
    /// The name of a deployed Ferry stack whose four state tables this
    /// stack shares instead of creating its own (StateTablesFrom): the
    /// other direction of a pair of replicators, one each way between the
    /// same two clusters. Deploy that stack first.
    #[arg(long, value_name = "STACK")]
    state_tables_from: Option<String>,
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
    if let Some(stack) = &args.state_tables_from {
        check_stack_name(stack)?;
    }
    // Written always, empty for a stack on tables of its own: a stack
    // deployed from a file without it would move to the default, its own
    // new tables, away from the other direction's (and copy every record
    // back). The file this run replaces must not lose it unnoticed.
    if let Some(out) = &args.out {
        let previous = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(refused) = dropped_state_tables(&previous, args.state_tables_from.as_deref()) {
            return Err(format!("{}: {refused}", out.display()));
        }
    }
    let shared = args.state_tables_from.clone().unwrap_or_default();
    if !shared.is_empty() {
        eprintln!("{}", shared_tables_note(&shared, &args.name));
    }
    params.insert("StateTablesFrom", shared);
    // The layer and these parameters travel apart; the functions check
    // that they belong together.
    params.insert(
        "DefinitionSha256",
        ferry_adapters::definition::fingerprint(&clusters_json, &info_json),
    );

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
    // The template grants kafka-cluster:* on two clusters only: the first
    // flow's source (SourceMskClusterArn) and target (TargetMskClusterArn).
    // Any other MSK IAM cluster would be deployed without a grant and every
    // execution of its flows refused: refuse it here instead.
    let ungranted: Vec<&str> = msk
        .iter()
        .filter(|c| c.id != first.source.id && c.id != first.target.id)
        .map(|c| c.id.as_str())
        .collect();
    if let Some(refused) = ungranted_iam_error(&ungranted, &first.source.id, &first.target.id) {
        return Err(refused);
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
    // MSK clusters given by their ARN alone: the functions look their
    // brokers up (kafka:GetBootstrapBrokers, granted on these ARNs only).
    let mut lookups: Vec<String> = Vec::new();
    for l in clusters.iter().filter_map(|c| c.msk_lookup()) {
        eprintln!(
            "ferry: MSK cluster {} has no BootstrapBrokerString: the functions look its brokers up with \
             kafka:GetBootstrapBrokers ({}), which the template grants on its ARN (MskBootstrapLookupArns)",
            l.arn,
            l.listener.field()
        );
        lookups.push(l.arn);
    }
    params.insert("MskBootstrapLookupArns", lookups.join(","));
    // PropagateTopicDeletions deletes target topics: on an MSK IAM cluster
    // that is kafka-cluster:DeleteTopic, granted only when a flow asks.
    let deletes = spec.flows.iter().any(|f| f.propagate_topic_deletions);
    params.insert("DeletesTopics", if deletes { "true" } else { "false" }.to_string());
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
    for (key, ids) in network(&clusters) {
        params.insert(key, ids);
    }
    if let Some(path) = &args.log_delivery {
        let ld = load_log_delivery(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?;
        params.insert("LogGroupName", ld.log_group.unwrap_or_default());
        params.insert("LogFirehoseStreamName", ld.firehose_stream.unwrap_or_default());
    }
    // Written last, once everything above was accepted: a refused
    // definition leaves the folder as it was.
    write_definition(&args.definition_dir, &clusters_json, &info_json)?;
    eprintln!(
        "ferry: wrote {dir}/kafka-clusters.json and {dir}/replication-info.json: the stack's definition layer. \
         template.yaml's folder must hold {dir}/ when you run `sam build` and `sam deploy` (its ContentUri is ferry-definition/)",
        dir = args.definition_dir.display()
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&params).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    let file = parameters_yaml(&params);
    // What the guided deploy must be answered: no cluster's VpcConfig gave it.
    let left: Vec<&str> = ["SubnetIds", "SecurityGroupIds"]
        .into_iter()
        .filter(|k| !params.contains_key(k))
        .collect();
    match &args.out {
        Some(path) => {
            std::fs::write(path, &file).map_err(|e| format!("{}: {e}", path.display()))?;
            // Absolute: `sam deploy` reads file:// from its own folder.
            let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            eprintln!(
                "ferry: wrote {}. {}",
                path.display(),
                how_to_deploy(&shown.display().to_string(), &left, args.state_tables_from.is_some())
            );
        }
        None => {
            print!("{file}");
            eprintln!(
                "ferry: save this as ferry-parameters.yaml (or use --out). {}",
                how_to_deploy("ferry-parameters.yaml", &left, args.state_tables_from.is_some())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands that deploy `file`: the first time guided (SAM asks for
/// the stack name, the region, the IAM capability and every parameter,
/// prefilled from the file, and saves the answers in samconfig.toml), then
/// with the file every time, so that its values (DefinitionSha256 among
/// them) win over the ones samconfig.toml saved. A stack on another's
/// tables is the second deployed from the folder: its own `--config-env`
/// keeps the first stack's saved settings.
fn how_to_deploy(file: &str, left: &[&str], shares_tables: bool) -> String {
    let env = if shares_tables { " --config-env <this stack's name>" } else { "" };
    format!(
        "Deploy from template.yaml's folder: `sam build`, then the first time `sam deploy --guided{env} --parameter-overrides \
         file://{file}` (it asks for the stack name, the region, the IAM capability and every parameter, prefilled from the \
         file{}, uploads to SAM's managed S3 bucket unless given --s3-bucket, and saves the answers in samconfig.toml); after \
         each later `ferry deploy-parameters`, `sam build` and `sam deploy{env} --parameter-overrides file://{file}` (the \
         file's values win over those samconfig.toml saved; without it, a changed definition would meet the old \
         DefinitionSha256 and every function would refuse it){}",
        if left.is_empty() {
            String::new()
        } else {
            format!(": answer {}", left.join(" and "))
        },
        if shares_tables {
            ". Its own --config-env keeps the settings samconfig.toml saved for the stack whose tables it shares"
        } else {
            ""
        }
    )
}

/// A CloudFormation stack name, as the template's StateTablesFrom
/// AllowedPattern takes it: refused here, before `sam deploy` would.
fn check_stack_name(stack: &str) -> Result<(), String> {
    let mut chars = stack.chars();
    let shaped =
        chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '-') && stack.len() <= 128;
    if shaped {
        Ok(())
    } else {
        Err(format!(
            "--state-tables-from {stack:?} is not a CloudFormation stack name (a letter, then letters, digits and hyphens, \
             at most 128). Fix: give the name of the deployed Ferry stack whose tables to share, as `aws cloudformation \
             describe-stacks --query 'Stacks[].StackName'` lists it, not an ARN or a table name"
        ))
    }
}

/// The refusal to rewrite a parameters file written with
/// `--state-tables-from X` without it (or with another stack): the stack
/// would leave the tables it shares.
fn dropped_state_tables(previous: &str, now: Option<&str>) -> Option<String> {
    let before = previous
        .lines()
        .find_map(|l| l.strip_prefix("StateTablesFrom: '")?.strip_suffix('\''))
        .filter(|s| !s.is_empty())?;
    (now != Some(before)).then(|| {
        format!(
            "was written with --state-tables-from {before}: deployed from this file, the stack would stop sharing stack \
             {before}'s tables{} and its flows would copy back what the other direction wrote. Fix: give \
             --state-tables-from {before} again; or, to really move the stack, delete it and deploy it anew (or write \
             another --out file)",
            now.map_or_else(|| " for tables of its own".to_owned(), |s| format!(" for stack {s}'s"))
        )
    })
}

/// What StateTablesFrom means, said when it is written.
fn shared_tables_note(stack: &str, name: &str) -> String {
    format!(
        "ferry: StateTablesFrom={stack}: this stack creates no state tables; its functions use stack {stack}'s \
         ({stack}-cursors, {stack}-offset-map, {stack}-producers, {stack}-groups), as two replicators one each way \
         between the same clusters must (loop prevention, exact offset translation across both). Deploy {stack} \
         first: this stack imports its export {stack}-StateTablesPrefix, so CloudFormation refuses this stack without \
         it and refuses to delete {stack} (and its tables) before this one. Give this replicator its own name \
         (--name {name}) and the other direction's flows only"
    )
}

/// The parameters as the YAML file `sam deploy --parameter-overrides
/// file://...` reads: a mapping of single-quoted strings (no YAML
/// typing: `0123` stays a string). A value on the command line instead
/// would be cut by SAM CLI's own parser at its first double quote.
/// The refusal of MSK IAM clusters the template would not grant
/// kafka-cluster:* on (neither the first flow's source nor its target).
fn ungranted_iam_error(ungranted: &[&str], source: &str, target: &str) -> Option<String> {
    (!ungranted.is_empty()).then(|| {
        format!(
            "MSK cluster(s) {} use IAM authentication but are neither the source ({source}) nor the target ({target}) of \
             the first flow, the only two clusters the template grants kafka-cluster:* on; deployed, every execution of \
             their flows would be refused. Fix: deploy one stack per pair of clusters, or make them the first flow's \
             source and target",
            ungranted.join(", ")
        )
    })
}

fn parameters_yaml(params: &BTreeMap<&str, String>) -> String {
    let mut out = String::from("# sam deploy --parameter-overrides file://<this file>; written by ferry deploy-parameters\n");
    for (k, v) in params {
        out.push_str(&format!("{k}: '{}'\n", v.replace('\'', "''")));
    }
    out
}

/// `SubnetIds` and `SecurityGroupIds` from the clusters' `VpcConfig` (as
/// `create-replicator` takes them), when the clusters that give them give
/// the same ones. MSK Replicator places interfaces per cluster; a function
/// has one VpcConfig, in one VPC, so differing sets (often other VPCs or
/// regions) are left to the user, with a warning, as are sets over
/// Lambda's limits (16 subnets, 5 security groups) and parameters no
/// cluster gives (`sam deploy --guided` asks for them).
fn network(clusters: &[&ClusterSpec]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    type Ids = fn(&ferry_core::config::VpcSpec) -> &Vec<String>;
    let kinds: [(&str, &str, usize, Ids); 2] = [
        ("SubnetIds", "subnets", 16, |v| &v.subnet_ids),
        ("SecurityGroupIds", "security groups", 5, |v| &v.security_group_ids),
    ];
    for (key, what, limit, ids) in kinds {
        let mut sets: Vec<(&str, Vec<&str>)> = Vec::new();
        for c in clusters {
            if let Some(v) = c.vpc.as_ref().filter(|v| !ids(v).is_empty()) {
                let mut set: Vec<&str> = ids(v).iter().map(String::as_str).collect();
                set.sort_unstable();
                set.dedup();
                sets.push((&c.alias, set));
            }
        }
        match sets.first() {
            None => eprintln!(
                "ferry: warning: no cluster's VpcConfig in kafka-clusters.json gives {key}: `sam deploy --guided` asks for it. \
                 Give {what} from which the functions reach every cluster's brokers (the book's \"Network checklist\", \
                 docs/src/operations/network.md), or add them to a cluster's VpcConfig"
            ),
            Some((_, first)) if sets.iter().any(|(_, s)| s != first) => eprintln!(
                "ferry: warning: the clusters' VpcConfig give different {key} ({}). A Lambda function sits in one VPC and \
                 takes one set: {key} is left out; give the {what} of the VPC that routes to every cluster (sam deploy \
                 --guided asks for them)",
                sets.iter()
                    .map(|(a, s)| format!("{a}: {}", s.join(",")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Some((_, first)) if first.len() > limit => eprintln!(
                "ferry: warning: the clusters' VpcConfig give {} {what}; Lambda takes at most {limit}: {key} is left out. \
                 Fix: choose up to {limit} (sam deploy --guided asks for them)",
                first.len()
            ),
            Some((_, first)) => out.push((key, first.join(","))),
        }
    }
    out
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

/// The definition files, as given (validated above), into `dir`: the
/// content of the template's DefinitionLayer, mounted at `/opt` in every
/// function, where `FERRY_DEFINITION_DIR` points.
fn write_definition(dir: &Path, clusters_json: &str, info_json: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    // The layer carries everything in the folder: refuse to mix in files
    // that are not the definition.
    use ferry_adapters::definition::{KAFKA_CLUSTERS_FILE, REPLICATION_INFO_FILE};
    let names = [KAFKA_CLUSTERS_FILE, REPLICATION_INFO_FILE];
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let ours = names.contains(&n.as_str()) || (n.starts_with('.') && n.ends_with(".json.tmp"));
            !ours
        })
        .collect();
    if !others.is_empty() {
        others.sort();
        return Err(format!(
            "{} holds {} besides the definition; the definition layer would carry them to every function. Fix: remove them, \
             or give another --definition-dir",
            dir.display(),
            others.join(", ")
        ));
    }
    for (name, text) in [(KAFKA_CLUSTERS_FILE, clusters_json), (REPLICATION_INFO_FILE, info_json)] {
        let path = dir.join(name);
        // Through a temporary file: a half-written definition is never packaged.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_stack_name, dropped_state_tables, has_random_suffix, shared_tables_note, ungranted_iam_error};

    /// StateTablesFrom takes a stack name only, as the template's
    /// AllowedPattern does; the refusal says what to give.
    #[test]
    fn state_tables_from_takes_a_stack_name() {
        for ok in ["ferry-a", "A", "ferry-rollback-2"] {
            assert_eq!(check_stack_name(ok), Ok(()), "{ok}");
        }
        let long = format!("a{}", "b".repeat(128));
        for bad in [
            "",
            "1ferry",
            "ferry_a",
            "ferry-a-cursors ",
            "arn:aws:cloudformation:us-east-1:1:stack/a/x",
            &long,
        ] {
            let e = check_stack_name(bad).expect_err(bad);
            assert!(
                e.contains("not a CloudFormation stack name") && e.contains("describe-stacks"),
                "{e}"
            );
        }
        let file = "ReplicatorName: 'b'\nStateTablesFrom: 'ferry-a'\n";
        assert_eq!(dropped_state_tables(file, Some("ferry-a")), None);
        assert_eq!(dropped_state_tables("StateTablesFrom: ''\n", None), None);
        assert_eq!(dropped_state_tables("ReplicatorName: 'b'\n", Some("ferry-a")), None);
        let e = dropped_state_tables(file, None).expect("refused");
        assert!(
            e.contains("tables of its own") && e.contains("--state-tables-from ferry-a again"),
            "{e}"
        );
        let e = dropped_state_tables(file, Some("ferry-c")).expect("refused");
        assert!(e.contains("for stack ferry-c's"), "{e}");
        let note = shared_tables_note("ferry-a", "b");
        assert!(
            note.contains("ferry-a-producers") && note.contains("Deploy ferry-a first"),
            "{note}"
        );
    }

    /// An MSK IAM cluster outside the first flow is refused, naming it and
    /// the fix.
    #[test]
    fn an_iam_cluster_the_template_would_not_grant_is_refused() {
        assert_eq!(ungranted_iam_error(&[], "a", "b"), None);
        let e = ungranted_iam_error(
            &["arn:aws:kafka:us-east-1:1:cluster/msk-b/x"],
            "onprem",
            "arn:aws:kafka:us-east-1:1:cluster/msk-a/y",
        )
        .expect("refused");
        assert!(e.contains("msk-b") && e.contains("one stack per pair"), "{e}");
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
