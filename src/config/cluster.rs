//! `[cluster]` in the config file and `metrod --cluster`: where the NATS
//! server is, this node's name, and how to authenticate and encrypt.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[cluster]` table. No table and no `--cluster`: no cluster, and no
/// NATS code runs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `nats://host:4222` (`tls://` for TLS); several servers separated by
    /// commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// This node's name, unique in the cluster [default: the host name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A token the server expects (`authorization { token }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// User and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// An NKey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// Refuse a server that does not offer TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// A PEM file of CA certificates to trust (besides the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify
    /// clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long a station's lease lasts (`10s`; docs/cluster.md, "One
    /// poller per bot"); every node of a cluster should use the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// A station's lease unless `[cluster] lease` or `--cluster-lease` says
/// otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The shortest and longest lease accepted.
pub const LEASE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Never prints a secret (token, password, NKey seed, credentials in the
/// URL).
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &self.url.as_deref().map(shown_url))
            .field("node", &self.node)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("credentials", &self.credentials)
            .field("nkey", &self.nkey.as_ref().map(|_| "(set)"))
            .field("require_tls", &self.require_tls)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("lease", &self.lease)
            .finish()
    }
}

impl ClusterConfig {
    pub fn is_empty(&self) -> bool {
        *self == ClusterConfig::default()
    }

    /// The node name in force: `node`, else the host name, else `metrod`.
    pub fn node_name(&self) -> String {
        if let Some(n) = self.node.as_deref().filter(|n| !n.trim().is_empty()) {
            return n.trim().to_string();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metrod".to_string())
    }

    /// Checks what can be checked before connecting (the URL's scheme,
    /// the node name, pairs that go together). Never quotes a secret.
    pub fn check(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Err("[cluster] needs url = \"nats://host:4222\"".into());
        };
        for one in url.split(',') {
            let one = one.trim();
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| one.starts_with(s))
                || !one.contains("://");
            if !scheme_ok || one.is_empty() {
                return Err("[cluster] url must be nats://host:port (or tls://)".into());
            }
        }
        let node = self.node_name();
        if node.chars().count() > 64 || node.chars().any(char::is_control) {
            return Err(
                "[cluster] node must be at most 64 characters, without control characters".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("[cluster] user and password go together".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("[cluster] tls_cert and tls_key go together".into());
        }
        self.lease_time()?;
        Ok(())
    }

    /// The lease time in force: `lease` (`2s`, `10s`, `1m`), else
    /// [`DEFAULT_LEASE`].
    pub fn lease_time(&self) -> Result<Duration, String> {
        let Some(raw) = self.lease.as_deref() else {
            return Ok(DEFAULT_LEASE);
        };
        let d = humantime::parse_duration(raw.trim())
            .map_err(|e| format!("[cluster] lease {raw:?} is not a duration like 10s: {e}"))?;
        let (lo, hi) = LEASE_RANGE;
        if d < lo || d > hi {
            return Err(format!(
                "[cluster] lease must be between {} s and {} s",
                lo.as_secs(),
                hi.as_secs()
            ));
        }
        Ok(d)
    }

    /// The client's options: authentication, TLS, reconnecting forever
    /// (metrod keeps working locally while the server is away).
    pub async fn connect_options(&self) -> Result<async_nats::ConnectOptions, String> {
        let mut o = async_nats::ConnectOptions::new()
            .name(format!("metrod {}", self.node_name()))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                // 100 ms, doubling, at most 2 s: a returning server is
                // found quickly, an absent one costs little.
                Duration::from_millis(100u64 << attempts.min(5)).min(Duration::from_secs(2))
            });
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(seed) = &self.nkey {
            o = o.nkey(seed.clone());
        }
        if let Some(path) = &self.credentials {
            o = o
                .credentials_file(path)
                .await
                .map_err(|e| format!("[cluster] credentials {}: {e}", path.display()))?;
        }
        if self.require_tls {
            o = o.require_tls(true);
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
        Ok(o)
    }
}

/// The server URL(s) with any user name, password or token taken out.
pub fn shown_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            match one.split_once("://") {
                Some((scheme, rest)) => {
                    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                    format!("{scheme}://{host}")
                }
                None => one.rsplit_once('@').map_or(one, |(_, h)| h).to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn parses_checks_and_hides_secrets() {
        let c: crate::config::Config = crate::config::parse_text(
            "[cluster]\nurl = \"nats://u:pw@h:4222\"\nnode = \"lap top\"\ntoken = \"s3cret\"\n",
        )
        .unwrap();
        assert_eq!(c.cluster.node_name(), "lap top");
        assert!(c.cluster.check().is_ok());
        let shown = format!("{:?}", c);
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw@"),
            "{shown}"
        );
        let mut bad = c.cluster.clone();
        bad.url = None;
        assert!(bad.check().unwrap_err().contains("url"));
        bad.url = Some("http://h".into());
        assert!(bad.check().is_err());
        bad.url = Some("nats://h:4222".into());
        bad.user = Some("u".into());
        assert!(bad.check().unwrap_err().contains("password"));
        assert!(crate::config::parse_text("[cluster]\nurll = \"x\"\n").is_err());
        let mut leased = c.cluster.clone();
        assert_eq!(leased.lease_time(), Ok(super::DEFAULT_LEASE));
        leased.lease = Some("2s".into());
        assert_eq!(leased.lease_time(), Ok(Duration::from_secs(2)));
        leased.lease = Some("10ms".into());
        assert!(leased.check().unwrap_err().contains("lease"));
        leased.lease = Some("soon".into());
        assert!(leased.check().unwrap_err().contains("lease"));
        assert!(crate::config::Config::default().cluster.is_empty());
    }
}
