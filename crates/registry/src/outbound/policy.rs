//! The address policy: which addresses the registry may connect to on behalf of a registration.
//!
//! An anonymous client must not be able to turn the registry against anyone: not against the
//! machine's own services, not against the cloud's metadata endpoint, not against other hosts
//! of the network it sits in. So a registration speaks for its own address only. The policy is
//! pure (addresses in, a verdict out); `super::dial` applies it to every address a name
//! resolves to, at every connect, so a name that resolves differently later is checked again.
//!
//! The rules, in order:
//! 1. IPv4 written inside IPv6 (`::ffff:a.b.c.d`, `::a.b.c.d`, NAT64's `64:ff9b::a.b.c.d`) is
//!    judged as the IPv4 address it carries;
//! 2. always refused: the unspecified address and `0.0.0.0/8`, link-local addresses (which hold
//!    the cloud metadata endpoint `169.254.169.254`), the other metadata addresses
//!    (`fd00:ec2::254`, `100.100.100.200`), broadcast and multicast, and the registry's own
//!    listening sockets;
//! 3. allowed: any address inside a `--callback-allow` network;
//! 4. otherwise the address must be the one the registration came from, or any loopback
//!    address when it came from loopback. A registration restored from a catalog written before
//!    registrants were recorded has no address: only rules 1-3 apply to it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Which addresses outbound calls may reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressPolicy {
    /// Networks any registration may point into (`--callback-allow`).
    allow: Vec<IpNet>,
    /// The registry's own listening sockets.
    own: Vec<SocketAddr>,
}

/// Why an address was refused, said so that the registering client can fix its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An address no registration may point at.
    Forbidden(IpAddr, &'static str),
    /// One of the registry's own listening sockets.
    OwnSocket(SocketAddr),
    /// Not the address the registration came from.
    NotTheRegistrant {
        /// The address asked for.
        target: IpAddr,
        /// Where the registration came from.
        registrant: IpAddr,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forbidden(address, what) => write!(f, "{address} is {what}, which the registry never calls"),
            Self::OwnSocket(socket) => write!(f, "{socket} is the registry's own address"),
            Self::NotTheRegistrant { target, registrant } if registrant.is_loopback() => write!(
                f,
                "{target} is not a loopback address, and the registration came from loopback \
                 (the registry's --callback-allow can allow other networks)"
            ),
            Self::NotTheRegistrant { target, registrant } => write!(
                f,
                "{target} is not the address the registration came from ({registrant}); the \
                 registry's --callback-allow can allow other networks"
            ),
        }
    }
}

impl AddressPolicy {
    /// A policy allowing `allow` besides each registrant's own address, and refusing `own`.
    pub fn new(allow: Vec<IpNet>, own: Vec<SocketAddr>) -> Self {
        Self { allow, own }
    }

    /// Whether a call made for a registration from `registrant` may connect to `target`.
    pub fn check(&self, registrant: Option<IpAddr>, target: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical(target.ip());
        if let Some(what) = forbidden(ip) {
            return Err(Refusal::Forbidden(ip, what));
        }
        let target = SocketAddr::new(ip, target.port());
        if self.is_own(target) {
            return Err(Refusal::OwnSocket(target));
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match registrant.map(canonical) {
            None => Ok(()),
            Some(registrant) if registrant == ip || (registrant.is_loopback() && ip.is_loopback()) => Ok(()),
            Some(registrant) => Err(Refusal::NotTheRegistrant { target: ip, registrant }),
        }
    }

    /// Whether `target` is one of the registry's listening sockets. A socket listening on the
    /// unspecified address is reached through any local address; loopback ones are known here,
    /// the others are recognised once connected (see [`AddressPolicy::is_self`]).
    fn is_own(&self, target: SocketAddr) -> bool {
        self.own.iter().any(|own| {
            own.port() == target.port()
                && (canonical(own.ip()) == target.ip() || (own.ip().is_unspecified() && target.ip().is_loopback()))
        })
    }

    /// Whether a connection from `local` to `peer` is this machine calling one of the
    /// registry's own sockets that listen on every address.
    pub fn is_self(&self, local: SocketAddr, peer: SocketAddr) -> bool {
        canonical(local.ip()) == canonical(peer.ip())
            && self
                .own
                .iter()
                .any(|own| own.ip().is_unspecified() && own.port() == peer.port())
    }
}

/// The IPv4 address an IPv6 address carries, if it is written as one; the address otherwise.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let prefix = &v6.segments()[..6];
    let octets = v6.octets();
    let embedded = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks), not :: or ::1.
    let compatible = prefix == [0; 6] && !matches!(u32::from(embedded), 0 | 1);
    // NAT64's well-known prefix, 64:ff9b::/96.
    let nat64 = prefix == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 { IpAddr::V4(embedded) } else { ip }
}

/// What kind of address no call may reach, if `ip` is one.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                Some("the unspecified address or in 0.0.0.0/8")
            } else if v4.is_link_local() {
                Some("a link-local address (the cloud metadata endpoint lives there)")
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata endpoint")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("a broadcast or multicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata endpoint")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    fn policy() -> AddressPolicy {
        AddressPolicy::new(Vec::new(), vec![socket("127.0.0.1:3000")])
    }

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[test]
    fn a_registration_may_point_at_its_own_address_and_nowhere_else() {
        let from = Some(ip("192.0.2.7"));
        assert_eq!(policy().check(from, socket("192.0.2.7:8080")), Ok(()));
        assert_eq!(
            policy().check(from, socket("192.0.2.8:8080")),
            Err(Refusal::NotTheRegistrant {
                target: ip("192.0.2.8"),
                registrant: ip("192.0.2.7")
            })
        );
        assert!(policy().check(from, socket("127.0.0.1:8080")).is_err());
        assert!(policy().check(from, socket("10.0.0.1:80")).is_err());
    }

    #[test]
    fn a_registration_from_loopback_may_point_at_any_loopback_address() {
        assert_eq!(policy().check(LOOPBACK, socket("127.0.0.1:8080")), Ok(()));
        assert_eq!(policy().check(LOOPBACK, socket("127.0.0.2:8080")), Ok(()));
        assert_eq!(policy().check(LOOPBACK, socket("[::1]:8080")), Ok(()));
        assert!(policy().check(LOOPBACK, socket("192.0.2.7:8080")).is_err());
        assert!(policy().check(Some(ip("::1")), socket("127.0.0.1:8080")).is_ok());
    }

    #[test]
    fn metadata_link_local_unspecified_and_broadcast_addresses_are_refused_even_when_allowed() {
        let open = AddressPolicy::new(
            vec!["0.0.0.0/0".parse().expect("net"), "::/0".parse().expect("net")],
            Vec::new(),
        );
        for target in [
            "169.254.169.254:80",
            "169.254.1.1:80",
            "100.100.100.200:80",
            "0.0.0.0:80",
            "0.1.2.3:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "[fe80::1]:80",
            "[fd00:ec2::254]:80",
            "[::]:80",
            "[ff02::1]:80",
        ] {
            let verdict = open.check(Some(ip("169.254.169.254")), socket(target));
            assert!(matches!(verdict, Err(Refusal::Forbidden(..))), "{target}: {verdict:?}");
        }
    }

    #[test]
    fn ipv4_written_inside_ipv6_is_judged_as_the_ipv4_address() {
        for target in [
            "[::ffff:169.254.169.254]:80",
            "[::169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
        ] {
            let verdict = policy().check(None, socket(target));
            assert_eq!(
                verdict,
                Err(Refusal::Forbidden(
                    ip("169.254.169.254"),
                    "a link-local address (the cloud metadata endpoint lives there)"
                )),
                "{target}"
            );
        }
        let from = Some(ip("192.0.2.7"));
        assert!(policy().check(from, socket("[::ffff:127.0.0.1]:8080")).is_err());
        assert_eq!(policy().check(from, socket("[::ffff:192.0.2.7]:8080")), Ok(()));
        assert_eq!(
            policy().check(Some(ip("::ffff:192.0.2.7")), socket("192.0.2.7:8080")),
            Ok(())
        );
    }

    #[test]
    fn the_registrys_own_sockets_are_refused() {
        assert_eq!(
            policy().check(LOOPBACK, socket("127.0.0.1:3000")),
            Err(Refusal::OwnSocket(socket("127.0.0.1:3000")))
        );
        assert!(policy().check(LOOPBACK, socket("[::ffff:127.0.0.1]:3000")).is_err());
        assert_eq!(policy().check(LOOPBACK, socket("127.0.0.1:3001")), Ok(()));
        let everywhere = AddressPolicy::new(Vec::new(), vec![socket("0.0.0.0:3000")]);
        assert!(everywhere.check(LOOPBACK, socket("127.0.0.5:3000")).is_err());
        assert!(everywhere.check(LOOPBACK, socket("[::1]:3000")).is_err());
        assert!(everywhere.is_self(socket("10.1.2.3:50000"), socket("10.1.2.3:3000")));
        assert!(!everywhere.is_self(socket("10.1.2.3:50000"), socket("10.1.2.4:3000")));
        assert!(
            !policy().is_self(socket("127.0.0.1:50000"), socket("127.0.0.1:3000")),
            "checked before connecting"
        );
    }

    #[test]
    fn callback_allow_widens_the_rule_for_every_registration() {
        let allow = AddressPolicy::new(vec!["10.0.0.0/8".parse().expect("net")], Vec::new());
        assert_eq!(allow.check(Some(ip("192.0.2.7")), socket("10.1.2.3:80")), Ok(()));
        assert_eq!(allow.check(LOOPBACK, socket("10.1.2.3:80")), Ok(()));
        assert!(allow.check(Some(ip("192.0.2.7")), socket("11.0.0.1:80")).is_err());
    }

    #[test]
    fn a_restored_registration_without_an_address_is_held_to_the_fixed_rules_only() {
        assert_eq!(policy().check(None, socket("192.0.2.8:80")), Ok(()));
        assert!(policy().check(None, socket("169.254.169.254:80")).is_err());
        assert!(policy().check(None, socket("127.0.0.1:3000")).is_err());
    }

    /// Fuzz target: however an address is spelled in a URL, a remote registration reaches only
    /// its own address, and no spelling gets a fixed-rule address allowed. Its corpus is in
    /// `src/outbound/__fuzz__/`.
    #[test]
    fn no_spelling_of_an_address_gets_past_the_policy() {
        let registrant = ip("192.0.2.7");
        let open = AddressPolicy::new(
            vec!["0.0.0.0/0".parse().expect("net"), "::/0".parse().expect("net")],
            Vec::new(),
        );
        bolero::check!().for_each(|bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let Ok(url) = url::Url::parse(&format!("http://{text}/")) else {
                return;
            };
            let target = match url.host() {
                Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
                Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
                _ => return,
            };
            let socket = SocketAddr::new(target, url.port_or_known_default().unwrap_or(80));
            if policy().check(Some(registrant), socket).is_ok() {
                assert_eq!(canonical(target), registrant, "{text:?} reached another address");
            }
            // The IPv4 address it spells, by the standard library's reading (not the policy's).
            let spelled = match target {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(v6) if v6 != Ipv6Addr::LOCALHOST => v6.to_ipv4(),
                IpAddr::V6(_) => None,
            };
            if let Some(v4) = spelled
                && (v4.is_link_local() || v4.octets()[0] == 0 || v4.is_broadcast() || v4.is_multicast())
            {
                assert!(
                    open.check(Some(registrant), socket).is_err(),
                    "{text:?} got past the fixed rules"
                );
            }
        });
    }

    #[test]
    fn refusals_say_what_to_do() {
        let text = policy()
            .check(Some(ip("192.0.2.7")), socket("10.0.0.1:80"))
            .expect_err("refused")
            .to_string();
        assert!(
            text.contains("192.0.2.7") && text.contains("--callback-allow"),
            "{text}"
        );
        let text = policy()
            .check(None, socket("169.254.169.254:80"))
            .expect_err("refused")
            .to_string();
        assert!(text.contains("metadata"), "{text}");
    }
}
