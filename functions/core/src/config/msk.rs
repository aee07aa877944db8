//! An Amazon MSK cluster named by its ARN alone, as `create-replicator`
//! takes it: which of the bootstrap broker strings MSK's GetBootstrapBrokers
//! returns Ferry connects through, for the authentication configured.

use super::{ClusterAuth, ClusterSpec};

/// One of an MSK cluster's client listeners, as GetBootstrapBrokers names
/// its bootstrap string. Only the private ones (inside the cluster's VPC,
/// where the functions run): the public and multi-VPC ones are for clients
/// elsewhere, and the BootstrapBrokerString extension can still name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MskListener {
    /// No TLS, no authentication (port 9092).
    Plaintext,
    /// TLS, no SASL (port 9094).
    Tls,
    /// SASL/SCRAM over TLS (port 9096).
    SaslScram,
    /// MSK IAM over TLS (port 9098).
    SaslIam,
}

impl MskListener {
    /// The listener for this authentication and encryption. An MSK
    /// cluster's configuration only reaches SASL/IAM and SASL/SCRAM (no
    /// ClientAuthentication is IAM, PLAINTEXT is refused); the other two
    /// complete the mapping.
    pub fn for_auth(auth: &ClusterAuth, tls: bool) -> Self {
        match (auth, tls) {
            (ClusterAuth::MskIam, _) => MskListener::SaslIam,
            (ClusterAuth::Scram { .. }, _) => MskListener::SaslScram,
            (ClusterAuth::None, true) => MskListener::Tls,
            (ClusterAuth::None, false) => MskListener::Plaintext,
        }
    }

    /// The field of GetBootstrapBrokers' answer (the API's name).
    pub fn field(self) -> &'static str {
        match self {
            MskListener::Plaintext => "BootstrapBrokerString",
            MskListener::Tls => "BootstrapBrokerStringTls",
            MskListener::SaslScram => "BootstrapBrokerStringSaslScram",
            MskListener::SaslIam => "BootstrapBrokerStringSaslIam",
        }
    }

    /// The listener in words.
    pub fn describe(self) -> &'static str {
        match self {
            MskListener::Plaintext => "plaintext listener (unauthenticated, port 9092)",
            MskListener::Tls => "TLS listener without SASL (unauthenticated, port 9094)",
            MskListener::SaslScram => "SASL/SCRAM listener (port 9096)",
            MskListener::SaslIam => "IAM listener (SASL/IAM, port 9098)",
        }
    }

    /// What turns the listener on, and the other way out.
    pub fn fix(self) -> &'static str {
        match self {
            MskListener::SaslIam => {
                "turn on IAM access control on the cluster (MSK console: the cluster's Properties, Security settings, Edit, \
                 IAM role-based authentication; or `aws kafka update-security`), or, if Ferry should use SASL/SCRAM, give the \
                 cluster ClientAuthentication.SaslScram in kafka-clusters.json"
            }
            MskListener::SaslScram => {
                "turn on SASL/SCRAM authentication on the cluster (Properties, Security settings, Edit; or `aws kafka \
                 update-security`) and associate the secret with it (`aws kafka batch-associate-scram-secret`), or leave \
                 ClientAuthentication out of kafka-clusters.json for IAM access control"
            }
            MskListener::Tls => {
                "turn on unauthenticated access with TLS encryption between clients and brokers on the cluster (Properties, \
                 Security settings)"
            }
            MskListener::Plaintext => {
                "allow plaintext between clients and brokers on the cluster (Properties, Security settings), or use TLS"
            }
        }
    }
}

/// An MSK cluster whose brokers are looked up at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskLookup {
    /// The cluster's ARN, as kafka-clusters.json gives it.
    pub arn: String,
    /// The cluster's region (from the ARN): MSK's API is called there.
    pub region: String,
    /// The listener whose bootstrap string Ferry connects through.
    pub listener: MskListener,
}

impl ClusterSpec {
    /// For an MSK cluster given by its ARN without BootstrapBrokerString:
    /// how to look its brokers up. `None` when the brokers are given.
    pub fn msk_lookup(&self) -> Option<MskLookup> {
        if !self.bootstrap.is_empty() {
            return None;
        }
        let region = super::msk_region(&self.id)?;
        Some(MskLookup {
            arn: self.id.clone(),
            region: region.to_owned(),
            listener: MskListener::for_auth(&self.auth, self.tls.is_some()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScramMechanism;

    #[test]
    fn each_authentication_has_its_listener() {
        let scram = ClusterAuth::Scram {
            mechanism: ScramMechanism::Sha512,
            secret_arn: "arn:aws:secretsmanager:us-east-1:1:secret:s".into(),
        };
        assert_eq!(
            MskListener::for_auth(&ClusterAuth::MskIam, true).field(),
            "BootstrapBrokerStringSaslIam"
        );
        assert_eq!(MskListener::for_auth(&scram, true).field(), "BootstrapBrokerStringSaslScram");
        assert_eq!(MskListener::for_auth(&ClusterAuth::None, true).field(), "BootstrapBrokerStringTls");
        assert_eq!(MskListener::for_auth(&ClusterAuth::None, false).field(), "BootstrapBrokerString");
        assert!(MskListener::SaslIam.fix().contains("turn on IAM access control"));
        assert!(MskListener::SaslScram.fix().contains("batch-associate-scram-secret"));
    }
}
