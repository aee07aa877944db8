//! Topic ACLs: read them from one cluster, create them on another.

use ferry_core::acls::{AclBinding, RESOURCE_TOPIC};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::{CreateAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::KafkaCluster;
use super::error::KafkaError;

/// DescribeAcls filter codes that match anything.
const ANY: i8 = 1;

impl KafkaCluster {
    /// Every ACL on a topic resource (any pattern). `Ok(None)` when the
    /// cluster has no authorizer (SECURITY_DISABLED).
    pub async fn topic_acls(&self) -> Result<Option<Vec<AclBinding>>, KafkaError> {
        let req = DescribeAclsRequest::default()
            .with_resource_type_filter(RESOURCE_TOPIC)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(ANY)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(ANY)
            .with_permission_type(ANY);
        let resp = self.send_any(&req).await?;
        match ResponseError::try_from_code(resp.error_code) {
            None => {}
            Some(ResponseError::SecurityDisabled) => return Ok(None),
            Some(error) => {
                return Err(KafkaError::Broker {
                    cluster: self.alias().to_owned(),
                    op: "DescribeAcls",
                    topic: "-".into(),
                    partition: -1,
                    error,
                    detail: resp.error_message.map(|m| m.to_string()).unwrap_or_default(),
                })
            }
        }
        let mut out = Vec::new();
        for r in resp.resources {
            for a in r.acls {
                out.push(AclBinding {
                    resource_type: r.resource_type,
                    resource_name: r.resource_name.to_string(),
                    pattern_type: r.pattern_type,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission_type: a.permission_type,
                });
            }
        }
        Ok(Some(out))
    }

    /// Create ACLs; the first refusal is the error.
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<(), KafkaError> {
        if acls.is_empty() {
            return Ok(());
        }
        let s = |v: &str| StrBytes::from_string(v.to_owned());
        let req = CreateAclsRequest::default().with_creations(
            acls.iter()
                .map(|a| {
                    AclCreation::default()
                        .with_resource_type(a.resource_type)
                        .with_resource_name(s(&a.resource_name))
                        .with_resource_pattern_type(a.pattern_type)
                        .with_principal(s(&a.principal))
                        .with_host(s(&a.host))
                        .with_operation(a.operation)
                        .with_permission_type(a.permission_type)
                })
                .collect(),
        );
        let resp = self.send_any(&req).await?;
        for (a, r) in acls.iter().zip(resp.results) {
            if let Some(error) = ResponseError::try_from_code(r.error_code) {
                return Err(KafkaError::Broker {
                    cluster: self.alias().to_owned(),
                    op: "CreateAcls",
                    topic: a.resource_name.clone(),
                    partition: -1,
                    error,
                    detail: format!("{a}: {}", r.error_message.map(|m| m.to_string()).unwrap_or_default()),
                });
            }
        }
        Ok(())
    }
}
