//! Who a request comes from, as HTTP tells it: its address ([`client_address`]) and an
//! anonymous browser's secret ([`browser_secret`]).
//!
//! The address is the request's peer, or, when the peer is a balancer the operator trusts
//! (`--trusted-proxies`), the client its `X-Forwarded-For` names.
//!
//! The header is read from the right: each trusted hop appends the address it received the
//! request from, so the rightmost entry that is not itself a trusted proxy is the first
//! address no trusted party vouches past. Entries further left are whatever the client wrote
//! and are never believed. A request from an untrusted peer is its peer, whatever it claims.
use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The cookie holding an anonymous browser's secret (see [`browser_secret`]).
pub const BROWSER_COOKIE: &str = "nimbus-anon";

/// Characters of a browser secret: 32 hex digits (128 random bits).
const SECRET_LEN: usize = 32;

/// The browser secret `req` carries in its `nimbus-anon` cookie, if well-formed. The node sets
/// the cookie (HttpOnly, so the page's scripts never see it, and never part of a URL) on a
/// browser's first response; the session ids it issues to that anonymous browser afterwards
/// are bound to the secret, so an id that leaks (a logged URL) is useless without it.
pub fn browser_secret(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value)
        .filter(|value| value.len() == SECRET_LEN && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A `Set-Cookie` value giving a browser a new secret.
pub fn new_browser_cookie() -> String {
    format!(
        "{BROWSER_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
        uuid::Uuid::new_v4().simple()
    )
}

/// The address `req` comes from, given the balancers in `trusted`.
pub fn client_address(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok());
    Some(resolve(peer, forwarded, trusted))
}

/// [`client_address`] on its parts: the peer, the `X-Forwarded-For` header lines in order.
fn resolve<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|line| line.split(',')).collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return canonical(ip),
            // Not an address (a port, an obfuscated name): nothing left of it can be believed.
            Err(_) => return peer,
        }
    }
    peer
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 one, so it is one client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_up_to_the_first_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let cases: &[(&str, &[&str], &str)] = &[
            // No balancer: the peer, whatever the header says.
            ("203.0.113.9", &["1.2.3.4"], "203.0.113.9"),
            // Through the balancer: the address it saw.
            ("10.0.0.2", &["198.51.100.7"], "198.51.100.7"),
            // A client that wrote its own header in front: only the balancer's entry counts.
            ("10.0.0.2", &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            // Two trusted hops, and the header on two lines.
            (
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.7", "10.1.2.3"],
                "198.51.100.7",
            ),
            // A trusted peer without the header is the client itself.
            ("10.0.0.2", &[], "10.0.0.2"),
            // Garbage where an address should be: the peer.
            ("10.0.0.2", &["nope"], "10.0.0.2"),
            // IPv4 written as IPv6 is that IPv4 address.
            ("10.0.0.2", &["::ffff:198.51.100.7"], "198.51.100.7"),
        ];
        for (peer, header, expected) in cases {
            let got = resolve(ip(peer), header.iter().copied(), &trusted);
            assert_eq!(got, ip(expected), "peer {peer}, header {header:?}");
        }
        assert_eq!(
            resolve(ip("10.0.0.2"), ["198.51.100.7"].into_iter(), &[]),
            ip("10.0.0.2"),
            "nothing trusted: the peer"
        );
    }
}
