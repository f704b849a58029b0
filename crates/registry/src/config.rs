//! The registry's configuration: one clap struct, every field a `--flag` with a `ROLLCALL_*`
//! environment equivalent. Durations are written the human way: `250ms`, `3s`, `10m`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How the registry listens, stores and checks health.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RegistryConfig {
    /// Address to listen on. Port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Directory for the registry's data (the catalog unless `--etcd` is given, the
    /// configuration releases, the token list); created when missing.
    #[arg(long, env = "ROLLCALL_DATA_DIR", default_value = "./rollcall-data/registry")]
    pub data_dir: PathBuf,

    /// Time between two probes of a passing instance (each instance on its own jittered clock).
    #[arg(long, env = "ROLLCALL_HEALTH_INTERVAL", default_value = "3s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// How long one probe may take before it counts as failed.
    #[arg(long, env = "ROLLCALL_HEALTH_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub health_timeout: Duration,

    /// Consecutive failed probes that make an instance critical (removed from discovery).
    #[arg(long, env = "ROLLCALL_HEALTH_TRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_tries: u32,

    /// Time between a failed probe and the next attempt, while the instance is suspect.
    #[arg(long, env = "ROLLCALL_HEALTH_RETRY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub health_retry_delay: Duration,

    /// How long an instance may stay critical before it is deregistered for good.
    #[arg(long, env = "ROLLCALL_DEREGISTER_CRITICAL_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub deregister_critical_after: Duration,

    /// How long one patch delivery (and the registration callback) may take.
    #[arg(long, env = "ROLLCALL_NOTIFY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub notify_timeout: Duration,

    /// Probes per second one host may receive (many instances registered at one host share
    /// it); a probe over it waits its turn.
    #[arg(long, env = "ROLLCALL_MAX_PROBES_PER_HOST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_probes_per_host: u32,

    /// Instances the registry admits in all; a registration of a new ServiceURL past it is
    /// refused (429 on /v1, 400 on the seed endpoint).
    #[arg(long, env = "ROLLCALL_MAX_INSTANCES", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instances: u32,

    /// Instances one service may have; a registration past it is refused like one past
    /// `--max-instances`.
    #[arg(long, env = "ROLLCALL_MAX_INSTANCES_PER_SERVICE", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instances_per_service: u32,

    /// Host names the registry answers for, besides IP addresses and localhost (a request for
    /// any other name is refused, against DNS rebinding). Comma-separated.
    #[arg(long, env = "ROLLCALL_ALLOWED_HOSTS", value_name = "NAMES", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Networks every registration's callback, heartbeat and update URLs may point into, besides
    /// the address the registration came from (or loopback, for registrations from loopback).
    /// Link-local, metadata and unspecified addresses and the registry's own sockets stay
    /// refused. Comma-separated CIDRs or addresses: `10.0.0.0/8,192.0.2.7`.
    #[arg(long, env = "ROLLCALL_CALLBACK_ALLOW", value_name = "CIDRS", value_delimiter = ',', value_parser = parse_network)]
    pub callback_allow: Vec<ipnet::IpNet>,

    /// Serve requests without a token from anywhere, as if every caller were local. Without it,
    /// requests without a token are served only when the registry listens on loopback and they
    /// come from loopback (the seed's Go services on one machine); elsewhere every request needs
    /// a token. Dangerous on a shared network: said at every start.
    #[arg(long, env = "ROLLCALL_ALLOW_ANONYMOUS", conflicts_with = "require_tokens")]
    pub allow_anonymous: bool,

    /// Serve no request without a token, from loopback neither: for a machine shared with
    /// users who should not change what others registered.
    #[arg(long, env = "ROLLCALL_REQUIRE_TOKENS")]
    pub require_tokens: bool,

    /// Where the catalog is kept when not in the data directory: an etcd cluster.
    #[command(flatten)]
    pub etcd: crate::store::EtcdArgs,

    /// HTTPS: the certificate and key to serve with.
    #[command(flatten)]
    pub tls: rollcall_http::TlsArgs,

    /// Trust only these certificate authorities (PEM) when calling services over https
    /// (callbacks, probes, deliveries, the audit trail); the platform's roots otherwise.
    #[arg(long, env = "ROLLCALL_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Ship the audit trail (every write asked for) to a LogService of the catalog; with
    /// `false` it is only logged on stderr.
    #[arg(long, env = "ROLLCALL_AUDIT_SHIPPING", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub audit_shipping: bool,
}

impl RegistryConfig {
    /// The defaults, listening on `listen` and storing under `data_dir`: what tests start from.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            health_interval: Duration::from_secs(3),
            health_timeout: Duration::from_secs(1),
            health_tries: 3,
            health_retry_delay: Duration::from_secs(1),
            deregister_critical_after: Duration::from_secs(600),
            notify_timeout: Duration::from_secs(2),
            max_probes_per_host: 100,
            max_instances: 20_000,
            max_instances_per_service: 5_000,
            allowed_hosts: Vec::new(),
            callback_allow: Vec::new(),
            allow_anonymous: false,
            require_tokens: false,
            audit_shipping: true,
            etcd: crate::store::EtcdArgs {
                etcd_prefix: "/rollcall/".to_owned(),
                node_ttl: Duration::from_secs(2),
                ..crate::store::EtcdArgs::default()
            },
            tls: rollcall_http::TlsArgs::default(),
            ca_file: None,
        }
    }

    /// When requests without a token are served.
    pub fn anonymous(&self) -> rollcall_http::Anonymous {
        if self.require_tokens {
            return rollcall_http::Anonymous::never();
        }
        rollcall_http::Anonymous::new(self.listen, self.allow_anonymous)
    }
}

/// Parses `250ms`, `3s`, `10m`, `1h 30m`; refuses a zero duration, which would spin.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write durations like 250ms, 3s or 10m)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Parses `10.0.0.0/8` or a single address (`192.0.2.7`, a network of one).
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither a network (10.0.0.0/8, fd00::/8) nor an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags with no arguments, as `rollcall registry` parses them.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        config: RegistryConfig,
    }

    #[test]
    fn new_matches_the_command_line_defaults() {
        use clap::Parser;
        let parsed = Flags::try_parse_from(["registry"]).expect("defaults parse").config;
        let built = RegistryConfig::new(
            "127.0.0.1:3000".parse().expect("address"),
            "./rollcall-data/registry".into(),
        );
        assert_eq!(parsed, built);
    }

    #[test]
    fn durations_read_the_human_way() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3").is_err());
    }

    #[test]
    fn callback_networks_are_cidrs_or_single_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".to_owned())
        );
        assert_eq!(
            parse_network(" 192.0.2.7").map(|n| n.to_string()),
            Ok("192.0.2.7/32".to_owned())
        );
        assert_eq!(
            parse_network("fd00::/8").map(|n| n.to_string()),
            Ok("fd00::/8".to_owned())
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("intranet").is_err());
    }
}
