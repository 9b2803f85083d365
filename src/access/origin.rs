//! ALLOWED_ORIGINS: which browser origins may open WebSocket connections.
//!
//! Browsers send `Origin` on every WebSocket upgrade and do not apply CORS to WebSockets, so a
//! page on any site could otherwise connect with its visitor's network position. Entries are
//! exact origins (`https://dashboard.example.com`) or patterns whose host starts with `*.`
//! (`https://*.example.com` matches every subdomain, not the apex). Empty: any origin. An upgrade
//! without `Origin` (a non-browser client) is never refused for it.

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

    pub(crate) fn allows(&self, origin: &str) -> bool {
        if self.exact.is_empty() && self.subdomains.is_empty() {
            return true;
        }
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
}
