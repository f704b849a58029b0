//! Who a request speaks for, read the same way by every rollcall server: the token it presents
//! ([`presented_token`]), whether it may speak for nobody ([`Anonymous`]), and the 401 that asks
//! for a token ([`unauthorized`]).
//!
//! [`peer_of`] reads the address a request came from, for the anonymous rule and for the record.
//!
//! A token travels as `Authorization: Bearer <token>` (programs) or as the password (or, with
//! an empty password, the user name) of `Authorization: Basic` (a browser's login prompt, and
//! `curl -u <token>:`). Verifying it is the registry's business (it issues tokens) or, for the
//! other services, the registry's answer about it.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::answer::ErrorAnswer;

/// An `Authorization` header that is neither a Bearer nor a Basic credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedCredentials;

/// The token `headers` present, if any.
pub fn presented_token(headers: &HeaderMap) -> Result<Option<String>, MalformedCredentials> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| MalformedCredentials)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(MalformedCredentials)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(rest.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(MalformedCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| MalformedCredentials)?;
    let decoded = String::from_utf8(decoded).map_err(|_| MalformedCredentials)?;
    let (user, password) = decoded.split_once(':').ok_or(MalformedCredentials)?;
    let token = if password.is_empty() { user } else { password };
    Ok(Some(token.to_owned()))
}

/// The address a request came from, as [`crate::serve`] records it; without one (a request not
/// served by it), the unspecified address, which is nobody's: not loopback, so never anonymous.
pub fn peer_of(extensions: &axum::http::Extensions) -> IpAddr {
    extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map_or(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        |axum::extract::ConnectInfo(peer)| peer.ip(),
    )
}

/// When a request without a token is served: from a loopback peer to a server that listens
/// only on loopback (so the seed's Go services keep working unchanged on one machine), or from
/// anyone when the operator said `--allow-anonymous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anonymous {
    loopback_only: bool,
    everywhere: bool,
}

impl Anonymous {
    /// The rule for a server listening on `listen`; `allow_anonymous` is the operator's
    /// `--allow-anonymous`.
    pub fn new(listen: SocketAddr, allow_anonymous: bool) -> Self {
        Self {
            loopback_only: listen.ip().is_loopback(),
            everywhere: allow_anonymous,
        }
    }

    /// The rule of a server told to `--require-tokens`: nobody is served without one, loopback
    /// included (on a machine shared with other users, a local peer may be anyone).
    pub fn never() -> Self {
        Self {
            loopback_only: false,
            everywhere: false,
        }
    }

    /// True when a request from `peer` may come without a token.
    pub fn permits(self, peer: IpAddr) -> bool {
        self.everywhere || (self.loopback_only && canonical(peer).is_loopback())
    }

    /// True when nobody needs a token: what a service registering with a registry may assume
    /// about itself.
    pub fn is_open(self) -> bool {
        self.everywhere || self.loopback_only
    }
}

/// `ip`, with an IPv4 address inside IPv6 read as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// A 401: `code` (`token_required`, `invalid_token`) and `message`, with the
/// `WWW-Authenticate` challenge that makes a browser ask for a token.
pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Response {
    let mut response = ErrorAnswer::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Basic realm="rollcall", charset="UTF-8""#),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    fn basic(pair: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }

    #[test]
    fn a_token_comes_as_bearer_or_as_a_basic_password_or_user() {
        assert_eq!(presented_token(&HeaderMap::new()), Ok(None));
        assert_eq!(presented_token(&headers("Bearer rc_x")), Ok(Some("rc_x".to_owned())));
        assert_eq!(presented_token(&headers("bearer  rc_x ")), Ok(Some("rc_x".to_owned())));
        assert_eq!(
            presented_token(&headers(&basic("alice:rc_x"))),
            Ok(Some("rc_x".to_owned()))
        );
        assert_eq!(presented_token(&headers(&basic("rc_x:"))), Ok(Some("rc_x".to_owned())));
        for bad in ["Bearer", "Digest abc", "Basic !!!", &basic("no colon")] {
            assert_eq!(presented_token(&headers(bad)), Err(MalformedCredentials), "{bad}");
        }
    }

    #[test]
    fn reading_any_authorization_header_never_panics() {
        bolero::check!().for_each(|bytes: &[u8]| {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, value);
                let _ = presented_token(&headers);
            }
        });
    }

    #[test]
    fn anonymous_requests_need_loopback_on_both_ends_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        let everywhere: SocketAddr = "0.0.0.0:3000".parse().expect("addr");
        let local: IpAddr = "127.0.0.2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        let remote: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(Anonymous::new(loopback, false).permits(local));
        assert!(Anonymous::new(loopback, false).permits(mapped));
        assert!(!Anonymous::new(loopback, false).permits(remote));
        assert!(
            !Anonymous::new(everywhere, false).permits(local),
            "a public listener serves nobody anonymously"
        );
        assert!(Anonymous::new(everywhere, true).permits(remote));
        assert!(!Anonymous::new(everywhere, false).is_open());
        assert!(!Anonymous::never().permits(local));
    }
}
