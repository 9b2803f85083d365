//! Connection caps of one task: in all (MAX_CONNECTIONS), per user (MAX_CONNECTIONS_PER_USER,
//! the token's `sub`) and per client address (MAX_CONNECTIONS_PER_IP).
//!
//! A connection holds a [`ConnectionPermit`] from its upgrade to the end of its session; the
//! permit is the count (mini-redis's semaphore permit, with three counters), so a connection
//! that ends in any way gives its place back when the session drops it. The three counters sit
//! under one lock: a connection is admitted against all of them or none.
//!
//! Before that, from the accept until it closes or is upgraded, a TCP connection holds an
//! [`HttpConnectionPermit`] (kept by `http::handshake`): MAX_CONNECTIONS_PER_IP caps these HTTP
//! connections per address too (sockets in their first request, connections kept alive between
//! API calls), in a count of their own. Their own, because a WebSocket being upgraded holds both
//! for a moment (it would count twice), and because an address at its WebSocket cap must still
//! reach the HTTP API (a service holding its connections publishes).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::protocol::{ErrorCode, RequestError};

/// The caps; 0 for the per-user and per-address ones means none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionCaps {
    pub max_connections: usize,
    pub max_per_user: usize,
    pub max_per_ip: usize,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionRefusal {
    /// The task holds MAX_CONNECTIONS (HTTP 503: another task may have room).
    MaxConnections,
    /// The token's user holds MAX_CONNECTIONS_PER_USER here (HTTP 429, or close 3504).
    PerUser,
    /// The client address holds MAX_CONNECTIONS_PER_IP here (HTTP 429).
    PerIp,
    /// The TCP peer holds MAX_CONNECTIONS_PER_IP HTTP connections (not WebSockets) here (the new
    /// one is closed at the accept, without an answer).
    HttpPerIp,
}

impl ConnectionRefusal {
    /// The `limit` label of the refusal metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::PerUser => "per_user",
            ConnectionRefusal::PerIp => "per_ip",
            ConnectionRefusal::HttpPerIp => "http_per_ip",
        }
    }

    pub(crate) fn to_request_error(self, caps: &ConnectionCaps) -> RequestError {
        let error = match self {
            ConnectionRefusal::MaxConnections => RequestError::new(
                ErrorCode::Busy,
                "This server holds as many connections as it may; retry (another instance may take it)",
            ),
            ConnectionRefusal::PerUser => RequestError::new(
                ErrorCode::TooManyConnections,
                format!("This user already holds {} connections here; close one first", caps.max_per_user),
            ),
            ConnectionRefusal::PerIp => RequestError::new(
                ErrorCode::TooManyConnections,
                format!("This address already holds {} connections here; close one first", caps.max_per_ip),
            ),
            ConnectionRefusal::HttpPerIp => RequestError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "This address already holds {} HTTP connections here (not WebSockets); retry later",
                    caps.max_per_ip
                ),
            ),
        };
        error.with_retry_after(crate::access::CONNECTION_RETRY_AFTER)
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_user: HashMap<Arc<str>, usize>,
    by_ip: HashMap<IpAddr, usize>,
    /// TCP connections per peer address that are not WebSockets (yet).
    http_by_ip: HashMap<IpAddr, usize>,
}

/// The counters behind the caps, shared by every connection of the task.
pub(crate) struct ConnectionLimits {
    caps: ConnectionCaps,
    counts: Mutex<Counts>,
}

impl ConnectionLimits {
    pub(crate) fn new(caps: ConnectionCaps) -> Arc<Self> {
        Arc::new(ConnectionLimits { caps, counts: Mutex::default() })
    }

    pub(crate) fn caps(&self) -> &ConnectionCaps {
        &self.caps
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counters stay consistent whatever a panicking holder did: every change is one
        // statement.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for a new connection from `ip` (the client address). Its user is added
    /// with [`ConnectionPermit::add_user`] once its token is verified: caps that cost nothing to
    /// check come before a signature check.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionPermit, ConnectionRefusal> {
        let mut counts = self.counts();
        if counts.total >= self.caps.max_connections {
            return Err(ConnectionRefusal::MaxConnections);
        }
        if let Some(ip) = ip {
            if exceeded(self.caps.max_per_ip, counts.by_ip.get(&ip)) {
                return Err(ConnectionRefusal::PerIp);
            }
            *counts.by_ip.entry(ip).or_default() += 1;
        }
        counts.total += 1;
        Ok(ConnectionPermit { limits: self.clone(), ip, user: None })
    }

    /// Takes a place for a TCP connection just accepted from `peer`, until it closes or is
    /// upgraded; refused when `peer` holds MAX_CONNECTIONS_PER_IP such connections.
    pub(crate) fn admit_http_connection(
        self: &Arc<Self>,
        peer: IpAddr,
    ) -> Result<HttpConnectionPermit, ConnectionRefusal> {
        let mut counts = self.counts();
        if exceeded(self.caps.max_per_ip, counts.http_by_ip.get(&peer)) {
            return Err(ConnectionRefusal::HttpPerIp);
        }
        *counts.http_by_ip.entry(peer).or_default() += 1;
        Ok(HttpConnectionPermit { limits: self.clone(), peer })
    }

    /// Open connections of `user` on this task.
    #[cfg(test)]
    pub(crate) fn connections_of(&self, user: &str) -> usize {
        self.counts().by_user.get(user).copied().unwrap_or(0)
    }
}

/// Whether one more would go over `cap` (0: no cap).
fn exceeded(cap: usize, held: Option<&usize>) -> bool {
    cap > 0 && held.copied().unwrap_or(0) >= cap
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// One connection's place under the caps; dropping it gives the place back.
pub(crate) struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
    user: Option<Arc<str>>,
}

impl ConnectionPermit {
    /// Counts the connection against `user`, once its first token is verified (on the upgrade
    /// or in `authenticate`); a refresh, for the same user, changes nothing.
    pub(crate) fn add_user(&mut self, user: &Arc<str>) -> Result<(), ConnectionRefusal> {
        if self.user.is_some() {
            return Ok(());
        }
        let mut counts = self.limits.counts();
        if exceeded(self.limits.caps.max_per_user, counts.by_user.get(user)) {
            return Err(ConnectionRefusal::PerUser);
        }
        *counts.by_user.entry(user.clone()).or_default() += 1;
        drop(counts);
        self.user = Some(user.clone());
        Ok(())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total -= 1;
        if let Some(ip) = &self.ip {
            release(&mut counts.by_ip, ip);
        }
        if let Some(user) = &self.user {
            release(&mut counts.by_user, user);
        }
    }
}

/// A TCP connection's place among its address's HTTP connections; dropping it (when the
/// connection closes, or its upgrade request has been handled) gives the place back.
pub(crate) struct HttpConnectionPermit {
    limits: Arc<ConnectionLimits>,
    peer: IpAddr,
}

impl Drop for HttpConnectionPermit {
    fn drop(&mut self) {
        release(&mut self.limits.counts().http_by_ip, &self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_user: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(ConnectionCaps { max_connections, max_per_user, max_per_ip })
    }

    #[test]
    fn each_cap_refuses_one_more_and_a_dropped_permit_gives_its_place_back() {
        let limits = limits(3, 1, 2);
        let (a, b): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
        let alice: Arc<str> = "alice".into();
        let mut first = limits.admit(Some(a)).unwrap();
        first.add_user(&alice).unwrap();
        first.add_user(&alice).unwrap();
        assert_eq!(limits.connections_of("alice"), 1, "a refresh counts nothing");
        let mut second = limits.admit(Some(a)).unwrap();
        assert_eq!(second.add_user(&alice), Err(ConnectionRefusal::PerUser));
        assert_eq!(limits.admit(Some(a)).err(), Some(ConnectionRefusal::PerIp));
        let third = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(None).err(), Some(ConnectionRefusal::MaxConnections));
        drop(first);
        assert_eq!(limits.connections_of("alice"), 0);
        let mut fourth = limits.admit(Some(b)).unwrap();
        fourth.add_user(&alice).unwrap();
        drop((second, third));
        let mut fifth = limits.admit(Some(a)).unwrap();
        assert_eq!(fifth.add_user(&alice), Err(ConnectionRefusal::PerUser));
        drop(fourth);
        fifth.add_user(&alice).unwrap();
        drop(fifth);
        let counts = limits.counts();
        assert_eq!((counts.total, counts.by_ip.len(), counts.by_user.len()), (0, 0, 0));
    }

    #[test]
    fn zero_means_no_cap_per_user_or_address() {
        let limits = limits(100, 0, 0);
        let user: Arc<str> = "svc".into();
        let permits: Vec<_> = (0..50)
            .map(|_| {
                let mut permit = limits.admit(Some(IpAddr::from([127, 0, 0, 1]))).unwrap();
                permit.add_user(&user).map(|()| permit)
            })
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(limits.connections_of("svc"), 50);
        drop(permits);
    }

    #[test]
    fn http_connections_have_their_own_count_under_the_address_cap() {
        let limits = limits(100, 0, 2);
        let (a, b): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
        let first = limits.admit_http_connection(a).unwrap();
        let second = limits.admit_http_connection(a).unwrap();
        assert_eq!(limits.admit_http_connection(a).err(), Some(ConnectionRefusal::HttpPerIp));
        let _other = limits.admit_http_connection(b).unwrap();
        // Both become WebSockets: each holds both places for a moment.
        let sockets = [limits.admit(Some(a)).unwrap(), limits.admit(Some(a)).unwrap()];
        drop((first, second));
        // The address is at its WebSocket cap, and may still start two requests (API calls).
        assert_eq!(limits.admit(Some(a)).err(), Some(ConnectionRefusal::PerIp));
        let _api_calls = [limits.admit_http_connection(a).unwrap(), limits.admit_http_connection(a).unwrap()];
        drop(sockets);
        assert_eq!(limits.counts().http_by_ip.get(&a), Some(&2));
    }

    #[test]
    fn zero_means_no_cap_on_http_connections() {
        let limits = limits(100, 0, 0);
        let permits: Vec<_> = (0..50)
            .map(|_| limits.admit_http_connection(IpAddr::from([127, 0, 0, 1])))
            .collect::<Result<_, _>>()
            .unwrap();
        drop(permits);
        assert!(limits.counts().http_by_ip.is_empty());
    }
}
