//! Which address a connection comes from, for the per-address connection limit.
//!
//! The TCP peer, unless the peer is a proxy listed in TRUSTED_PROXIES (behind the ALB: the VPC
//! range). Then the `X-Forwarded-For` entries are read from the right, the end the proxies
//! appended to, and the first address that is not a trusted proxy is the client. Entries to its
//! left were written by the client itself and are never believed: a client cannot dodge its
//! limit (or use someone else's) by sending the header.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// From TRUSTED_PROXIES: CIDRs (`10.0.0.0/16`) or single addresses (`10.0.0.7`).
    pub(crate) fn parse(entries: &[String]) -> Result<Self, String> {
        Ok(TrustedProxies { networks: crate::config::parse_networks(entries)? })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub(crate) fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks.iter().any(|network| network.contains(&address))
    }

    /// The client's address: `peer` (the TCP peer) or, when `peer` is a trusted proxy, the
    /// rightmost `X-Forwarded-For` entry that is not one. `forwarded_for` holds the values of
    /// every `X-Forwarded-For` header in the order received (several headers are one list).
    pub(crate) fn client_address(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        for entry in forwarded_for.iter().rev().flat_map(|value| value.rsplit(',')) {
            // A proxy writes a bare address; anything else was not written by one we trust.
            let Ok(address) = entry.trim().parse::<IpAddr>() else { break };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|entry| entry.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_address(ip("198.51.100.7"), &["203.0.113.1"]), ip("198.51.100.7"));
        let vpc = proxies(&["10.0.0.0/16"]);
        assert_eq!(vpc.client_address(ip("198.51.100.7"), &["203.0.113.1"]), ip("198.51.100.7"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_entry_it_appended_is_the_client() {
        let vpc = proxies(&["10.0.0.0/16"]);
        let alb = ip("10.0.3.4");
        assert_eq!(vpc.client_address(alb, &["203.0.113.9"]), ip("203.0.113.9"));
        // The client wrote the first entry itself; the ALB appended the second.
        assert_eq!(vpc.client_address(alb, &["1.1.1.1, 203.0.113.9"]), ip("203.0.113.9"));
        // Two headers are one list; proxies in the chain are skipped.
        assert_eq!(vpc.client_address(alb, &["1.1.1.1", "203.0.113.9, 10.0.9.9"]), ip("203.0.113.9"));
        // Nothing but proxies: the leftmost is the best known.
        assert_eq!(vpc.client_address(alb, &["10.0.1.1, 10.0.2.2"]), ip("10.0.1.1"));
        // No header: the proxy itself.
        assert_eq!(vpc.client_address(alb, &[]), alb);
        // Garbage where an address belongs stops the walk at the last proxy.
        assert_eq!(vpc.client_address(alb, &["unknown"]), alb);
    }

    #[test]
    fn addresses_compare_in_canonical_form() {
        let loopback = proxies(&["127.0.0.1"]);
        assert_eq!(loopback.client_address(ip("::ffff:127.0.0.1"), &["::ffff:203.0.113.9"]), ip("203.0.113.9"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(TrustedProxies::parse(&["vpc".to_owned()]).is_err());
        assert!(proxies(&["fd00::/8", " 192.168.0.0/24 "]).trusts(ip("192.168.0.200")));
    }
}
