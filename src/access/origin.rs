//! ALLOWED_ORIGINS: which browser origins may open WebSocket connections.
//!
//! Browsers send `Origin` on every WebSocket upgrade and do not apply CORS to WebSockets, so a
//! page on any site could otherwise connect with its visitor's network position. Entries are
//! exact origins (`https://dashboard.example.com`) or patterns whose host starts with `*.`
//! (`https://*.example.com` matches every subdomain, not the apex). Empty: any origin when
//! tokens are configured; without tokens only pages served from this machine
//! ([`is_loopback_origin`]), to which a list adds its origins ([`crate::access::AccessPolicy::admit_upgrade`]).
//! An upgrade without `Origin` (a non-browser client) is never refused for it.

use std::net::IpAddr;

/// The configured origins; matching is case-insensitive on the scheme and host.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginAllowList {
    exact: Vec<String>,
    /// (scheme with "://", ".suffix" of the host, rest after the host: ":port" or "").
    subdomains: Vec<(String, String, String)>,
}

impl OriginAllowList {
    /// From entries that passed [`crate::config`]'s origin check.
    pub(crate) fn new(entries: &[String]) -> Self {
        let mut list = OriginAllowList::default();
        for entry in entries.iter().map(|entry| entry.to_ascii_lowercase()) {
            match entry.split_once("://*.") {
                Some((scheme, rest)) => {
                    let (host, port) =
                        rest.split_once(':').map_or((rest, String::new()), |(host, port)| (host, format!(":{port}")));
                    list.subdomains.push((format!("{scheme}://"), format!(".{host}"), port));
                }
                None => list.exact.push(entry),
            }
        }
        list
    }

    /// Whether `origin` may connect when tokens protect the gateway: listed, or no list.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        (self.exact.is_empty() && self.subdomains.is_empty()) || self.lists(origin)
    }

    /// Whether `origin` is listed (an empty list lists nothing).
    pub(crate) fn lists(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.exact.contains(&origin)
            || self.subdomains.iter().any(|(scheme, suffix, port)| {
                origin.strip_prefix(scheme.as_str()).is_some_and(|authority| {
                    let (host, rest) =
                        authority.split_once(':').map_or((authority, ""), |(host, _)| (host, &authority[host.len()..]));
                    rest == port && host.len() > suffix.len() && host.ends_with(suffix.as_str())
                })
            })
    }
}

/// Whether `origin` is a page served from this machine: `http` or `https` on `localhost` (or
/// `*.localhost`, RFC 6761) or a loopback address, on any port or none (a dashboard's dev server
/// runs on a port of its own). `null` (a sandboxed or `file:` page) is not.
pub(crate) fn is_loopback_origin(origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else { return false };
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
        Some(url::Host::Ipv6(address)) => IpAddr::V6(address).to_canonical().is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_and_subdomain_patterns() {
        let list = OriginAllowList::new(&[
            "https://dash.example.com".into(),
            "https://*.agents.example".into(),
            "http://*.local.test:3000".into(),
        ]);
        assert!(list.allows("https://dash.example.com"));
        assert!(list.allows("HTTPS://Dash.Example.com"));
        assert!(!list.allows("http://dash.example.com"));
        assert!(!list.allows("https://dash.example.com.evil.test"));
        assert!(list.allows("https://a.agents.example"));
        assert!(list.allows("https://a.b.agents.example"));
        assert!(!list.allows("https://agents.example"));
        assert!(!list.allows("https://evilagents.example"));
        assert!(!list.allows("https://a.agents.example:8443"));
        assert!(list.allows("http://x.local.test:3000"));
        assert!(!list.allows("http://x.local.test"));
        assert!(!list.allows("null"));
    }

    #[test]
    fn an_empty_list_allows_any_origin() {
        assert!(OriginAllowList::default().allows("https://anywhere.example"));
    }

    #[test]
    fn an_empty_list_lists_nothing() {
        assert!(!OriginAllowList::default().lists("https://anywhere.example"));
        assert!(OriginAllowList::new(&["https://dash.example.com".into()]).lists("https://dash.example.com"));
    }

    #[test]
    fn loopback_origins_are_pages_of_this_machine_on_any_port() {
        for origin in [
            "http://localhost",
            "http://localhost:5173",
            "HTTP://LOCALHOST:3000",
            "https://localhost:8443",
            "http://app.localhost:3000",
            "http://127.0.0.1",
            "http://127.0.0.1:8080",
            "http://127.9.9.9:1",
            "http://[::1]:3000",
            "http://[::ffff:127.0.0.1]:3000",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:3000",
            "http://evil.example#@localhost",
            "http://localhost@evil.example",
            "http://user:pass@localhost",
            "file://localhost/page.html",
            "ws://localhost:8080",
            "http://10.0.0.1:8080",
            "http://[::2]:8080",
            "localhost:8080",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }

    #[test]
    fn a_list_of_one_kind_refuses_the_origins_it_does_not_list() {
        let exact_only = OriginAllowList::new(&["https://dash.example.com".into()]);
        assert!(!exact_only.allows("https://evil.example"));
        let subdomains_only = OriginAllowList::new(&["https://*.agents.example".into()]);
        assert!(!subdomains_only.allows("https://evil.example"));
        // A pattern's suffix alone is not a subdomain of it.
        assert!(!subdomains_only.allows("https://.agents.example"));
    }

    #[test]
    fn an_origin_with_a_user_name_is_not_a_loopback_one() {
        assert!(!is_loopback_origin("http://user@localhost:3000"));
    }
}
