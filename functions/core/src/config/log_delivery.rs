//! `log-delivery.json`, as MSK Replicator's `ReplicatorLogDelivery` takes it
//! (CloudWatchLogs, Firehose, S3), mapped onto what a Lambda deployment can
//! do: the functions write to the named CloudWatch Logs group, and a
//! subscription forwards every line to the named Firehose stream. Logs go
//! to S3 through Firehose: a direct S3 destination is refused with that fix.

use serde::Deserialize;

use super::ConfigError;

/// Where the deployed functions' logs go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogDelivery {
    /// The CloudWatch Logs group to write to, instead of the stack's own.
    pub log_group: Option<String>,
    /// The Firehose stream every log line is forwarded to.
    pub firehose_stream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "CloudWatchLogs", alias = "cloudWatchLogs")]
    cloud_watch_logs: Option<CloudWatchLogs>,
    #[serde(rename = "Firehose", alias = "firehose")]
    firehose: Option<Firehose>,
    #[serde(rename = "S3", alias = "s3")]
    s3: Option<S3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudWatchLogs {
    #[serde(rename = "Enabled", alias = "enabled")]
    enabled: bool,
    #[serde(rename = "LogGroup", alias = "logGroup")]
    log_group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Firehose {
    #[serde(rename = "Enabled", alias = "enabled")]
    enabled: bool,
    #[serde(rename = "DeliveryStream", alias = "deliveryStream")]
    delivery_stream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3 {
    #[serde(rename = "Enabled", alias = "enabled")]
    enabled: bool,
    #[serde(rename = "Bucket", alias = "bucket")]
    bucket: Option<String>,
    #[serde(rename = "Prefix", alias = "prefix")]
    prefix: Option<String>,
}

/// Parse and check `log-delivery.json` (the object itself, or wrapped as
/// `{"ReplicatorLogDelivery": {...}}`).
pub fn load_log_delivery(file: &str, json: &str) -> Result<LogDelivery, ConfigError> {
    let mut value = super::parse_json(file, json)?;
    let mut prefix = String::new();
    if let Some(inner) = value.as_object_mut().and_then(|m| m.remove("ReplicatorLogDelivery")) {
        value = inner;
        prefix = "ReplicatorLogDelivery".into();
    }
    let wire: Wire = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(
            file,
            format!("{prefix}.{path}").trim_matches('.').to_owned(),
            e.into_inner().to_string(),
            "write it as ReplicatorLogDelivery takes it: CloudWatchLogs {Enabled, LogGroup}, Firehose {Enabled, DeliveryStream}, S3 {Enabled, Bucket, Prefix}",
        )
    })?;
    let at = |field: &str| format!("{prefix}.{field}").trim_matches('.').to_owned();
    let mut out = LogDelivery::default();
    if let Some(c) = wire.cloud_watch_logs.filter(|c| c.enabled) {
        let group = c.log_group.filter(|g| !g.trim().is_empty()).ok_or_else(|| {
            ConfigError::new(
                file,
                at("CloudWatchLogs.LogGroup"),
                "CloudWatchLogs is enabled but names no log group",
                "name an existing log group, or set Enabled to false to keep the stack's own log groups",
            )
        })?;
        out.log_group = Some(group);
    }
    if let Some(f) = wire.firehose.filter(|f| f.enabled) {
        let stream = f.delivery_stream.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            ConfigError::new(
                file,
                at("Firehose.DeliveryStream"),
                "Firehose is enabled but names no delivery stream",
                "name the Firehose delivery stream, or set Enabled to false",
            )
        })?;
        out.firehose_stream = Some(stream);
    }
    if let Some(s) = wire.s3.filter(|s| s.enabled) {
        return Err(ConfigError::new(
            file,
            at("S3"),
            format!(
                "Lambda functions cannot deliver logs to S3 directly (bucket {}, prefix {})",
                s.bucket.unwrap_or_default(),
                s.prefix.unwrap_or_default()
            ),
            "create a Firehose delivery stream that writes to that bucket and prefix, name it under Firehose.DeliveryStream, and set S3.Enabled to false",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudwatch_and_firehose_are_honoured() {
        let d = load_log_delivery(
            "ld.json",
            r#"{"CloudWatchLogs": {"Enabled": true, "LogGroup": "/ferry/prod"}, "Firehose": {"Enabled": true, "DeliveryStream": "logs"}, "S3": {"Enabled": false}}"#,
        )
        .expect("valid");
        assert_eq!(d.log_group.as_deref(), Some("/ferry/prod"));
        assert_eq!(d.firehose_stream.as_deref(), Some("logs"));
        let wrapped = load_log_delivery("ld.json", r#"{"ReplicatorLogDelivery": {"cloudWatchLogs": {"enabled": false}}}"#).expect("valid");
        assert_eq!(wrapped, LogDelivery::default());
    }

    #[test]
    fn bad_input_says_where_and_how_to_fix_it() {
        let e = load_log_delivery("ld.json", r#"{"CloudWatchLogs": {"Enabled": true}}"#).expect_err("no group");
        assert_eq!(e.field, "CloudWatchLogs.LogGroup");
        let e = load_log_delivery("ld.json", r#"{"S3": {"Enabled": true, "Bucket": "b"}}"#).expect_err("S3");
        assert!(e.fix.contains("Firehose"), "{e}");
        let e = load_log_delivery(
            "ld.json",
            r#"{"ReplicatorLogDelivery": {"Firehose": {"Enabled": true, "Stream": "x"}}}"#,
        )
        .expect_err("field");
        assert!(e.field.starts_with("ReplicatorLogDelivery.Firehose"), "{e}");
        assert!(e.problem.contains("unknown field"), "{e}");
    }
}
