//! The command-line flags every rollcall service command shares (`rollcall logs`, `rollcall
//! grades`, `rollcall portal`, ...), each with a `ROLLCALL_*` environment variable.
//!
//! Each command flattens [`ServiceArgs`] into its own clap struct and gives its default port to
//! [`ServiceArgs::listen_or`]; the runtime derives the rest.

use std::net::SocketAddr;

use crate::client_args::ClientArgs;

/// Where the service listens, how others reach it, and where its registry is.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServiceArgs {
    /// Address to listen on [default: 127.0.0.1 and the service's own port]. Port 0 picks a
    /// free port.
    #[arg(long, env = "ROLLCALL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The URL other services reach this one at [default: http:// (https:// with --tls-cert)
    /// and the listen address, with 127.0.0.1 when listening on every interface].
    #[arg(long, env = "ROLLCALL_ADVERTISE", value_name = "URL", value_parser = parse_http_url)]
    pub advertise: Option<String>,

    /// The registry: its base URL, or the seed-style `.../services` URL Go services use; several,
    /// comma-separated, for several nodes of one catalog (a call that cannot connect to one
    /// moves on to the next).
    #[arg(
        long,
        env = "ROLLCALL_REGISTRY",
        value_name = "URL",
        default_value = DEFAULT_REGISTRY,
        value_parser = parse_registry_url
    )]
    pub registry: String,

    /// Host names the service answers for, besides IP addresses, localhost and its advertised
    /// host (a request for any other name is refused, against DNS rebinding). Comma-separated.
    #[arg(long, env = "ROLLCALL_ALLOWED_HOSTS", value_name = "NAMES", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// The token presented to the registry and the log service, and the authorities trusted.
    #[command(flatten)]
    pub client: ClientArgs,

    /// HTTPS: the certificate and key this service serves with.
    #[command(flatten)]
    pub tls: rollcall_http::TlsArgs,

    /// Start without a token although listening beyond loopback (where the registry serves
    /// requests without one only if it was told to). Said at every start.
    #[arg(long, env = "ROLLCALL_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// How long a stop waits, still serving, for dependents to let go of this instance (it is
    /// taken out of rotation first). Zero skips draining.
    #[arg(long, env = "ROLLCALL_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,

    /// Renew the registration within this TTL instead of being probed, for a service the
    /// registry cannot reach (behind NAT, say): it renews every third of it. The rollcall
    /// registry only; from 100ms to 1 day.
    #[arg(long, env = "ROLLCALL_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,

    /// The configuration namespace the service reads its documents from (an environment:
    /// `prod`, `staging`).
    #[arg(
        long,
        env = "ROLLCALL_CONFIG_NAMESPACE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub config_namespace: String,
}

/// Where a service looks for the registry unless told otherwise.
pub const DEFAULT_REGISTRY: &str = "http://127.0.0.1:3000";

impl ServiceArgs {
    /// Flags for a service listening on `listen`, with the default registry.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen: Some(listen),
            advertise: None,
            registry: DEFAULT_REGISTRY.to_owned(),
            allowed_hosts: Vec::new(),
            client: ClientArgs::default(),
            tls: rollcall_http::TlsArgs::default(),
            allow_anonymous: false,
            drain_timeout: std::time::Duration::from_secs(10),
            ttl: None,
            config_namespace: "default".to_owned(),
        }
    }

    /// The address to listen on: `--listen`, or `default` when it was not given.
    pub fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }
}

/// The registry's base URL from what a user wrote: a trailing `/` or `/services` (the seed's
/// registration endpoint) is dropped, so both spellings name the same registry.
pub fn registry_base_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/services").unwrap_or(trimmed).to_owned()
}

/// Each registry base URL of `urls`, a comma-separated list (one URL is a list of one).
pub fn registry_base_urls(urls: &str) -> Vec<String> {
    let bases: Vec<String> = urls
        .split(',')
        .filter(|url| !url.trim().is_empty())
        .map(registry_base_url)
        .collect();
    if bases.is_empty() {
        vec![registry_base_url(urls)]
    } else {
        bases
    }
}

/// The first registry of `urls` (comma-separated), as a base URL: where a command that talks
/// to one registry at a time starts.
pub fn first_registry(urls: &str) -> String {
    registry_base_urls(urls).swap_remove(0)
}

fn parse_registry_url(value: &str) -> Result<String, String> {
    let urls = value
        .split(',')
        .map(|url| parse_http_url(url).map(|url| registry_base_url(&url)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(urls.join(","))
}

fn parse_http_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http:// or https:// URL with a host".to_owned());
    }
    Ok(value.trim().trim_end_matches('/').to_owned())
}

/// The URL to advertise for a server bound to `bound` serving `scheme`: an unspecified address
/// (listening on every interface) is advertised as loopback, since there is no single right
/// interface.
pub(crate) fn advertised_url(scheme: &str, bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        service: ServiceArgs,
    }

    fn parse(args: &[&str]) -> Result<ServiceArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|c| c.service)
    }

    #[test]
    fn defaults_leave_the_port_to_the_service() {
        let args = parse(&[]).expect("parses");
        assert_eq!(args.registry, "http://127.0.0.1:3000");
        assert_eq!(args.advertise, None);
        assert_eq!(args.listen_or("127.0.0.1:6000".parse().expect("addr")).port(), 6000);
        let given = parse(&["--listen", "127.0.0.1:7000"]).expect("parses");
        assert_eq!(given.listen_or("127.0.0.1:6000".parse().expect("addr")).port(), 7000);
    }

    #[test]
    fn a_seed_style_registry_url_names_the_same_registry() {
        for url in [
            "http://localhost:3000/services",
            "http://localhost:3000/",
            "http://localhost:3000",
        ] {
            assert_eq!(
                parse(&["--registry", url]).expect("parses").registry,
                "http://localhost:3000"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let error = parse(&["--registry", "localhost:3000"]).expect_err("no scheme");
        assert!(error.to_string().contains("http://"), "{error}");
        assert!(parse(&["--advertise", "not a url"]).is_err());
        assert!(parse(&["--listen", "localhost"]).is_err());
    }

    #[test]
    fn the_advertised_url_follows_the_bound_address() {
        let url = |s: &str| advertised_url("http", s.parse().expect("addr"));
        assert_eq!(url("127.0.0.1:6000"), "http://127.0.0.1:6000");
        assert_eq!(
            advertised_url("https", "127.0.0.1:6000".parse().expect("addr")),
            "https://127.0.0.1:6000"
        );
        assert_eq!(url("0.0.0.0:6000"), "http://127.0.0.1:6000");
        assert_eq!(url("[::]:6000"), "http://[::1]:6000");
        assert_eq!(url("192.0.2.7:80"), "http://192.0.2.7:80");
    }

    #[test]
    fn several_registries_are_a_comma_separated_list_each_spelled_either_way() {
        let parsed = Command::try_parse_from([
            "test",
            "--registry",
            "http://10.0.0.1:3000/services,http://10.0.0.2:3000/",
        ])
        .expect("parses");
        assert_eq!(parsed.service.registry, "http://10.0.0.1:3000,http://10.0.0.2:3000");
        assert_eq!(
            registry_base_urls(&parsed.service.registry),
            ["http://10.0.0.1:3000", "http://10.0.0.2:3000"]
        );
        assert_eq!(first_registry(&parsed.service.registry), "http://10.0.0.1:3000");
        assert!(Command::try_parse_from(["test", "--registry", "http://a:1,ftp://b"]).is_err());
    }
}
