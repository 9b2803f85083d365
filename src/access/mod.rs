//! The one place that decides whether a connection (or an HTTP caller) may do an action.
//!
//! [`AccessPolicy::authenticate`] turns credentials (a publish API key, a connection token) into
//! a [`Principal`]; [`AccessPolicy::check`] rules on each action; [`AccessPolicy::admit_upgrade`]
//! on each WebSocket upgrade (protected mode, `Origin`). Sessions and HTTP handlers call nothing
//! else. Denied by default: with tokens configured (JWT_SECRET or JWT_JWKS_URL) a connection may
//! do nothing but `ping` and `authenticate` until it has a token, and then only what the token's
//! `scope` and `projects` allow. A refusal names the project asked for and never says whether it
//! exists.
//!
//! Without tokens the gateway trusts this machine's callers ([`AccessPolicy::admit_local_caller`]):
//! open mode (bound to loopback) and protected mode (bound to another address: anonymous callers
//! from loopback only, unless ALLOW_ANONYMOUS). A web page in the local user's browser is on this
//! machine too, so that trust also needs a loopback `Host` (not a DNS-rebound name) and, for a
//! WebSocket, a loopback `Origin` or one in ALLOWED_ORIGINS.
//!
//! The abuse limits are decided here too ([`Limits`]): connection caps at the upgrade and at the
//! first `authenticate`, a request budget per connection, a budget per caller of the publish API.
//!
//! - [`configure`]: the policy built from its settings (ACCESS: keys, tokens, origins, limits),
//!   and [`check_token`] for the command line.
//! - [`token`]: what a token grants, and its verification.
//! - [`jwks`]: the issuer's keys, when tokens are verified against a JWKS.
//! - [`origin`]: the `Origin` allow-list of WebSocket upgrades.
//! - [`client_address`]: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - [`connections`]: connection caps per task, user and address, held as permits.
//! - [`rate`]: request budgets (token buckets) per connection and per API caller.

pub(crate) mod client_address;
mod configure;
pub(crate) mod connections;
pub(crate) mod jwks;
pub(crate) mod origin;
pub(crate) mod rate;
pub(crate) mod token;

use std::{net::IpAddr, sync::Arc, time::Duration};

pub use self::configure::{check_token, TokenCheckError};
use self::{
    client_address::TrustedProxies,
    connections::{ConnectionCaps, ConnectionLimits, ConnectionPermit, ConnectionRefusal, HttpConnectionPermit},
    origin::OriginAllowList,
    rate::{ApiBudgets, ClientRates, Rate, RequestBudget},
    token::{Identity, Scopes, TokenError, TokenVerifier},
};
use crate::protocol::{ErrorCode, RequestError};

/// Who is asking, as far as the gateway knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Presented a valid publish API key, or publishing is open (no keys, loopback).
    pub can_publish: bool,
    /// Presented a valid publish API key: a service's credential.
    pub has_key: bool,
    /// The verified token's identity, once the connection (or HTTP request) has one.
    pub identity: Option<Arc<Identity>>,
}

impl Principal {
    /// Presented no credential the gateway accepted.
    pub(crate) fn is_anonymous(&self) -> bool {
        !self.has_key && self.identity.is_none()
    }

    pub(crate) fn user_id(&self) -> Option<&str> {
        self.identity.as_ref().map(|identity| &*identity.user_id)
    }
}

/// An action to rule on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action<'a> {
    /// Subscribe to a project while already holding `held` subscriptions.
    Subscribe { project_id: &'a str, held: usize },
    /// End a subscription.
    Unsubscribe,
    /// Publish to a project's subscribers.
    Publish { project_id: &'a str },
    /// Forward a message for a project to an agent queue.
    Forward { project_id: &'a str },
    /// Read a project's audit records.
    ReadAudit { project_id: &'a str },
    /// Read a project's publication history (what its subscribers receive).
    ReadHistory { project_id: &'a str },
    /// Read who is subscribed to a project (`presence`, `presence_stats`, HTTP presence).
    ReadPresence { project_id: &'a str },
    /// Decide a project's approval requests (scope `approve`).
    Decide { project_id: &'a str },
}

/// How connections prove who they are.
#[derive(Default)]
pub(crate) struct Authentication {
    /// Verifies connection tokens; None: connections are anonymous (the original protocol).
    pub verifier: Option<Arc<TokenVerifier>>,
    /// Without a verifier, accept anonymous connections from non-loopback peers too.
    pub allow_anonymous: bool,
    pub origins: OriginAllowList,
}

/// Why an upgrade is refused before the WebSocket opens.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UpgradeRefusal {
    /// Protected mode: an anonymous connection from a non-loopback client (HTTP 401).
    AnonymousFromNetwork,
    /// The `Origin` is not allowed: not in ALLOWED_ORIGINS, or without tokens neither loopback
    /// nor listed (HTTP 403).
    Origin,
    /// Trusted for being on this machine, but addressed to a name that is not loopback: a
    /// DNS-rebound page (HTTP 403).
    Host,
}

impl UpgradeRefusal {
    pub(crate) fn to_request_error(&self) -> RequestError {
        match self {
            UpgradeRefusal::AnonymousFromNetwork => RequestError::new(
                ErrorCode::Unauthorized,
                "Anonymous connections are accepted from this machine only: configure JWT_SECRET or \
                 JWT_JWKS_URL for tokens, or set ALLOW_ANONYMOUS=true to accept them from anywhere",
            ),
            UpgradeRefusal::Origin => RequestError::new(
                ErrorCode::Forbidden,
                "This Origin may not open connections: list it in ALLOWED_ORIGINS (without tokens, \
                 pages served from this machine are allowed too)",
            ),
            UpgradeRefusal::Host => LocalCallerRefusal::Host.to_request_error(),
        }
    }
}

impl From<LocalCallerRefusal> for UpgradeRefusal {
    fn from(refusal: LocalCallerRefusal) -> Self {
        match refusal {
            LocalCallerRefusal::FromNetwork => UpgradeRefusal::AnonymousFromNetwork,
            LocalCallerRefusal::Host => UpgradeRefusal::Host,
        }
    }
}

/// Why a caller without a credential is refused where only this machine's callers are served
/// (protected and open mode; see [`AccessPolicy::admit_local_caller`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalCallerRefusal {
    /// Protected mode: the client is not on this machine (HTTP 401).
    FromNetwork,
    /// The request is not addressed to a loopback name (HTTP 403).
    Host,
}

impl LocalCallerRefusal {
    pub(crate) fn to_request_error(self) -> RequestError {
        match self {
            LocalCallerRefusal::FromNetwork => RequestError::new(
                ErrorCode::Unauthorized,
                "Without a credential this server answers callers on this machine only (protected mode): \
                 present a publish API key, configure JWT_SECRET or JWT_JWKS_URL for tokens, or set \
                 ALLOW_ANONYMOUS=true to serve anonymous callers from anywhere",
            ),
            LocalCallerRefusal::Host => RequestError::new(
                ErrorCode::Forbidden,
                "Without a credential this server answers only requests addressed to a loopback host \
                 (Host: localhost, 127.0.0.1 or [::1]): present a credential to use another name",
            ),
        }
    }
}

/// The abuse limits (issue 13's settings).
pub(crate) struct Limits {
    pub trusted_proxies: TrustedProxies,
    pub connections: Arc<ConnectionLimits>,
    pub client_rates: ClientRates,
    pub api: ApiBudgets,
}

impl Default for Limits {
    /// No limits (unit tests of other rules).
    fn default() -> Self {
        let caps = ConnectionCaps { max_connections: usize::MAX, max_per_user: 0, max_per_ip: 0 };
        Limits {
            trusted_proxies: TrustedProxies::default(),
            connections: ConnectionLimits::new(caps),
            client_rates: ClientRates::default(),
            api: ApiBudgets::new(Rate::UNLIMITED),
        }
    }
}

pub(crate) struct AccessPolicy {
    publish_keys: Vec<String>,
    /// Every address the server binds is a loopback one (open mode when there are no tokens).
    loopback_only: bool,
    /// No keys configured and bound to loopback: publishing needs no key.
    publish_open: bool,
    max_subscriptions: usize,
    authentication: Authentication,
    limits: Limits,
}

impl AccessPolicy {
    /// `loopback_only`: every address the server binds is a loopback one.
    pub(crate) fn new(publish_keys: Vec<String>, loopback_only: bool, max_subscriptions: usize) -> Self {
        let publish_open = publish_keys.is_empty() && loopback_only;
        AccessPolicy {
            publish_keys,
            loopback_only,
            publish_open,
            max_subscriptions,
            authentication: Authentication::default(),
            limits: Limits::default(),
        }
    }

    /// The same policy, with connection authentication as configured.
    pub(crate) fn with_authentication(mut self, authentication: Authentication) -> Self {
        self.authentication = authentication;
        self
    }

    /// The same policy, with the abuse limits as configured.
    pub(crate) fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Connections must present a token (JWT_SECRET or JWT_JWKS_URL is set).
    pub(crate) fn tokens_required(&self) -> bool {
        self.authentication.verifier.is_some()
    }

    /// The start-up log's line on how connections authenticate.
    pub(crate) fn describe_authentication(&self) -> String {
        match (&self.authentication.verifier, self.authentication.allow_anonymous) {
            (Some(verifier), _) => format!("connections need a token: {}", verifier.describe()),
            (None, false) => "connections are anonymous and accepted from loopback only (protected mode): set \
                              JWT_SECRET or JWT_JWKS_URL, or ALLOW_ANONYMOUS=true"
                .to_owned(),
            (None, true) => "connections are anonymous and accepted from anywhere (ALLOW_ANONYMOUS=true)".to_owned(),
        }
    }

    /// Rules on an upgrade before any token is looked at: the `Origin`, then without tokens
    /// [`AccessPolicy::admit_local_caller`] (protected mode, the loopback `Host`). `client` is
    /// the client's address ([`AccessPolicy::client_address`]).
    ///
    /// With tokens, an `Origin` must be in ALLOWED_ORIGINS when that is set (the token is the
    /// protection). Without tokens a connection is trusted for where it comes from, and a page
    /// of any site open in a local browser comes from here: its `Origin` must be a loopback one
    /// (`http://localhost:5173`, any port) or listed in ALLOWED_ORIGINS. An upgrade without
    /// `Origin` (not a browser) is never refused for it.
    pub(crate) fn admit_upgrade(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), UpgradeRefusal> {
        let origins = &self.authentication.origins;
        if let Some(origin) = origin {
            let allowed = if self.tokens_required() {
                origins.allows(origin)
            } else {
                origin::is_loopback_origin(origin) || origins.lists(origin)
            };
            if !allowed {
                return Err(UpgradeRefusal::Origin);
            }
        }
        if self.tokens_required() {
            return Ok(());
        }
        Ok(self.admit_local_caller(host, client)?)
    }

    /// Without tokens and without ALLOW_ANONYMOUS, callers without a credential are served
    /// because they are on this machine. In protected mode that is the client's address (behind
    /// a trusted proxy, the address it forwarded); in open mode the loopback bind is the
    /// boundary (whoever reaches the port is local). Either way the request must be addressed to
    /// a loopback `Host`: a page of another site that rebinds its DNS name to 127.0.0.1 is in
    /// the local browser, but not addressed to this machine by name.
    pub(crate) fn admit_local_caller(
        &self,
        host: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), LocalCallerRefusal> {
        if self.tokens_required() || self.authentication.allow_anonymous {
            return Ok(());
        }
        if !self.loopback_only && !client.is_some_and(|client| client.to_canonical().is_loopback()) {
            return Err(LocalCallerRefusal::FromNetwork);
        }
        if !host.is_some_and(is_loopback_host) {
            return Err(LocalCallerRefusal::Host);
        }
        Ok(())
    }

    /// Verifies a connection token (None when tokens are not configured: then it means nothing).
    pub(crate) async fn verify_token(&self, token: &str) -> Option<Result<Arc<Identity>, TokenError>> {
        let verifier = self.authentication.verifier.as_ref()?;
        Some(verifier.verify(token).await)
    }

    /// Whether a bearer value is one of the publish API keys.
    fn is_publish_key(&self, presented: &str) -> bool {
        self.publish_key_index(presented).is_some()
    }

    /// Which of the publish API keys a bearer value is.
    fn publish_key_index(&self, presented: &str) -> Option<usize> {
        self.publish_keys.iter().position(|known| constant_time_eq(known.as_bytes(), presented.as_bytes()))
    }

    /// The principal of a WebSocket upgrade: as [`AccessPolicy::authenticate`], except that with
    /// tokens required open publishing (the HTTP API's loopback convenience) is no credential: a
    /// connection publishes with a publish key or its token's `publish` scope.
    pub(crate) async fn connection_principal(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Principal, TokenError> {
        let mut principal = self.authenticate(authorization, query_token).await?;
        if self.tokens_required() {
            principal.can_publish = principal.has_key;
        }
        Ok(principal)
    }

    /// The principal of an HTTP request or upgrade: its `Authorization: Bearer` value is a
    /// publish key or, with tokens configured, a token (`query_token` is `?token=`, for
    /// upgrades). A token that fails verification is an error: the request is refused (401).
    /// Without tokens configured a token means nothing (the connection is anonymous).
    pub(crate) async fn authenticate(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<Principal, TokenError> {
        let mut principal = self.principal(authorization);
        let bearer = authorization.and_then(bearer_credentials);
        let bearer_token = bearer.filter(|presented| !self.is_publish_key(presented));
        if let Some(token) = query_token.filter(|token| !token.is_empty()).or(bearer_token) {
            if let Some(verified) = self.verify_token(token).await {
                principal.identity = Some(verified?);
            }
        }
        Ok(principal)
    }

    /// A line for the start-up log saying how publishing is protected.
    pub(crate) fn describe(&self) -> &'static str {
        match (self.publish_keys.is_empty(), self.publish_open) {
            (false, _) => "publish API requires a key from PUBLISH_API_KEYS",
            (true, true) => "publish API is OPEN without a key: no PUBLISH_API_KEYS and bound to loopback",
            (true, false) => "publish API is DISABLED: set PUBLISH_API_KEYS to enable it on a non-loopback address",
        }
    }

    /// The principal for an `Authorization` header value, as far as publish keys go (absent:
    /// anonymous). [`AccessPolicy::authenticate`] also verifies a token.
    pub(crate) fn principal(&self, authorization: Option<&str>) -> Principal {
        let presented = authorization.and_then(bearer_credentials);
        let key_ok = presented.is_some_and(|key| self.is_publish_key(key));
        Principal { can_publish: self.publish_open || key_ok, has_key: key_ok, identity: None }
    }

    /// Whether `principal` may do `action`.
    pub(crate) fn check(&self, principal: &Principal, action: Action<'_>) -> Result<(), RequestError> {
        if let Action::Subscribe { held, .. } = action {
            if held >= self.max_subscriptions {
                return Err(RequestError::new(
                    ErrorCode::TooManySubscriptions,
                    format!("A connection may hold at most {} subscriptions", self.max_subscriptions),
                ));
            }
        }
        if !self.tokens_required() {
            // Anonymous connections, the original protocol: keys gate publishing and the audit.
            return match action {
                Action::Publish { .. } | Action::ReadAudit { .. } if !principal.can_publish => Err(RequestError::new(
                    ErrorCode::Forbidden,
                    "This needs a publish API key (Authorization: Bearer KEY)",
                )),
                _ => Ok(()),
            };
        }
        let (scope, project_id, verb) = match action {
            // A publish key is a service's credential: it publishes and reads without a token.
            Action::Publish { .. } | Action::ReadAudit { .. } | Action::ReadHistory { .. } if principal.can_publish => {
                return Ok(())
            }
            Action::Subscribe { project_id, .. } => (Scopes::SUBSCRIBE, Some(project_id), "subscribe to"),
            // History is what any subscriber receives, so whoever may subscribe may read it.
            Action::ReadHistory { project_id } => (Scopes::SUBSCRIBE, Some(project_id), "read the history of"),
            Action::Forward { project_id } => (Scopes::FORWARD, Some(project_id), "forward for"),
            Action::Decide { project_id } => (Scopes::APPROVE, Some(project_id), "decide the approvals of"),
            Action::Publish { project_id } => (Scopes::PUBLISH, Some(project_id), "publish to"),
            Action::ReadAudit { project_id } => (Scopes::PUBLISH, Some(project_id), "read the audit of"),
            Action::Unsubscribe => (Scopes::SUBSCRIBE, None, "unsubscribe"),
            // A service's publish key reads presence as it reads history.
            Action::ReadPresence { .. } if principal.has_key => return Ok(()),
            // Presence is who else receives the project: whoever may subscribe may see it.
            Action::ReadPresence { project_id } => (Scopes::SUBSCRIBE, Some(project_id), "read the presence of"),
        };
        let Some(identity) = &principal.identity else {
            return Err(RequestError::new(
                ErrorCode::Unauthorized,
                "Authenticate first: {\"action\":\"authenticate\",\"token\":\"<JWT>\"}",
            ));
        };
        let Some(project_id) = project_id else { return Ok(()) };
        if identity.scopes.has(scope) && identity.projects.matches(project_id) {
            return Ok(());
        }
        Err(RequestError::new(
            ErrorCode::Forbidden,
            format!("This token does not allow you to {verb} project {project_id:?}"),
        ))
    }
}

/// The abuse limits.
impl AccessPolicy {
    /// The client's address: the TCP peer, or behind a trusted proxy the address it forwarded
    /// (`forwarded_for`: the `X-Forwarded-For` values in order).
    pub(crate) fn client_address(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        peer.map(|peer| self.limits.trusted_proxies.client_address(peer, forwarded_for))
    }

    /// Admits a new connection under the task's and the address's caps; the permit is its
    /// place until it ends.
    pub(crate) fn admit_connection(&self, client: Option<IpAddr>) -> Result<ConnectionPermit, ConnectionRefusal> {
        self.limits.connections.admit(client)
    }

    /// Takes a place among `peer`'s HTTP connections (those not upgraded to a WebSocket) for a
    /// TCP connection just accepted (the TCP peer: its `X-Forwarded-For` has not arrived yet).
    /// None for a peer in TRUSTED_PROXIES: a proxy carries many clients, and forwards a request
    /// only once its head is complete.
    pub(crate) fn admit_http_connection(
        &self,
        peer: IpAddr,
    ) -> Result<Option<HttpConnectionPermit>, ConnectionRefusal> {
        if self.limits.trusted_proxies.trusts(peer) {
            return Ok(None);
        }
        self.limits.connections.admit_http_connection(peer.to_canonical()).map(Some)
    }

    /// Counts a connection against its user's cap, once it has a verified token.
    pub(crate) fn admit_user(
        &self,
        permit: &mut ConnectionPermit,
        identity: &Identity,
    ) -> Result<(), ConnectionRefusal> {
        permit.add_user(&identity.user_id)
    }

    /// What to answer a connection refused by a cap.
    pub(crate) fn connection_refusal(&self, refusal: ConnectionRefusal) -> RequestError {
        refusal.to_request_error(self.limits.connections.caps())
    }

    /// The request budget of a connection: a service's (a publish key, open publishing, or a
    /// token with the `publish` scope) or a client's.
    pub(crate) fn request_budget(&self, principal: &Principal) -> RequestBudget {
        RequestBudget::new(&self.limits.client_rates, Self::is_service(principal))
    }

    /// Whether a connection's budget should now be a service's, after it authenticated.
    pub(crate) fn budget_changes(&self, budget: &RequestBudget, principal: &Principal) -> bool {
        budget.is_service() != Self::is_service(principal)
    }

    fn is_service(principal: &Principal) -> bool {
        principal.can_publish
            || principal.identity.as_ref().is_some_and(|identity| identity.scopes.has(Scopes::PUBLISH))
    }

    /// Spends one request of an API caller's budget: per publish key, else per user, else
    /// (open mode) one budget for every anonymous caller.
    pub(crate) fn check_api_rate(
        &self,
        principal: &Principal,
        authorization: Option<&str>,
    ) -> Result<(), RequestError> {
        let presented = authorization.and_then(bearer_credentials);
        let key_index = presented.and_then(|presented| self.publish_key_index(presented));
        // The key's position, not the key: budgets are keyed by something safe to hold.
        let caller = match (key_index, principal.user_id()) {
            (Some(index), _) => format!("key#{index}"),
            (None, Some(user)) => format!("user:{user}"),
            (None, None) => "anonymous".to_owned(),
        };
        match self.limits.api.spend(&caller) {
            None => Ok(()),
            Some(retry_after) => Err(RequestError::rate_limited(
                format!("Over the publish API's rate limit; retry in {} ms", retry_after.as_millis().max(1)),
                retry_after,
            )),
        }
    }

    /// Forgets the API budgets of idle callers (called on a timer).
    pub(crate) fn forget_idle_api_callers(&self) {
        self.limits.api.forget_idle();
    }

    /// The start-up log's line on the limits.
    pub(crate) fn describe_limits(&self) -> String {
        let caps = self.limits.connections.caps();
        let cap = |value: usize| if value == 0 { "none".to_owned() } else { value.to_string() };
        let proxies = if self.limits.trusted_proxies.is_empty() {
            "the TCP peer (no TRUSTED_PROXIES: behind a proxy, every client shares its address)"
        } else {
            "the X-Forwarded-For entry of a trusted proxy"
        };
        format!(
            "limits: {} connections, {} per user, {} per address (client address: {proxies})",
            caps.max_connections,
            cap(caps.max_per_user),
            cap(caps.max_per_ip)
        )
    }
}

/// How long a client refused by a connection cap should wait (`Retry-After`): places free up
/// as connections end, which cannot be predicted, so long enough not to hammer.
pub(crate) const CONNECTION_RETRY_AFTER: Duration = Duration::from_secs(5);

impl AccessPolicy {
    /// Whether `principal` may read the server's own figures (`GET /api/v1/stats`, which the
    /// status page shows): whoever may read the audit without a token (a publish key; no key
    /// in open mode), or a token with the `admin` scope.
    pub(crate) fn check_operator(&self, principal: &Principal) -> Result<(), RequestError> {
        let admin = principal.identity.as_ref().is_some_and(|identity| identity.scopes.has(Scopes::ADMIN));
        if principal.can_publish || admin {
            return Ok(());
        }
        let code = if principal.is_anonymous() { ErrorCode::Unauthorized } else { ErrorCode::Forbidden };
        Err(RequestError::new(
            code,
            "This needs a publish API key or a token with the admin scope (Authorization: Bearer ...)",
        ))
    }

    /// The API's rules for requests that carry no credentials because none are needed (open
    /// mode). A web page in the user's browser can reach a loopback server too, so there
    /// the request must be addressed to a loopback `Host` (a DNS-rebound name is not), and a body
    /// must be declared `application/json` (a cross-site `text/plain` or form POST is sent
    /// without a CORS preflight; a JSON one is not). `content_type` is None for a request
    /// without a body.
    pub(crate) fn check_open_request(
        &self,
        host: Option<&str>,
        content_type: Option<&str>,
        has_body: bool,
    ) -> Result<(), OpenRequestRefusal> {
        if !self.publish_open {
            return Ok(());
        }
        if !host.is_some_and(is_loopback_host) {
            return Err(OpenRequestRefusal::Host);
        }
        let json = content_type.and_then(|value| value.split(';').next()).map(str::trim);
        if has_body && !json.is_some_and(|media| media.eq_ignore_ascii_case("application/json")) {
            return Err(OpenRequestRefusal::ContentType);
        }
        Ok(())
    }
}

/// Why an open-mode API request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenRequestRefusal {
    /// Not addressed to a loopback host name or address.
    Host,
    /// A body not declared as JSON.
    ContentType,
}

impl OpenRequestRefusal {
    pub(crate) fn to_request_error(self) -> RequestError {
        match self {
            OpenRequestRefusal::Host => RequestError::new(
                ErrorCode::Forbidden,
                "Without PUBLISH_API_KEYS the API answers only requests addressed to a loopback host \
                 (Host: localhost, 127.0.0.1 or [::1]); set PUBLISH_API_KEYS to use another name",
            ),
            OpenRequestRefusal::ContentType => {
                RequestError::new(ErrorCode::InvalidRequest, "The body must be sent as Content-Type: application/json")
            }
        }
    }
}

/// The credentials of an `Authorization: Bearer CREDENTIALS` value. The scheme is
/// case-insensitive (RFC 7235: `bearer` and `BEARER` are `Bearer`); the credentials are not.
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| credentials.trim())
}

/// Whether a `Host` header names this machine: `localhost` (and `*.localhost`, RFC 6761) or a
/// loopback address, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: bool = true;
    const ANY: bool = false;
    /// The `Host` of a request addressed to this machine.
    const LOCAL_HOST: Option<&str> = Some("localhost:8080");

    #[test]
    fn keys_gate_publishing() {
        let policy = AccessPolicy::new(vec!["k1".into(), "k2".into()], ANY, 10);
        assert!(policy.principal(Some("Bearer k2")).can_publish);
        assert!(!policy.principal(Some("Bearer k3")).can_publish);
        assert!(!policy.principal(Some("k1")).can_publish);
        assert!(!policy.principal(None).can_publish);
        let denied = policy.check(&Principal::default(), Action::Publish { project_id: "p" });
        assert_eq!(denied.unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn without_keys_publishing_is_open_only_on_loopback() {
        assert!(AccessPolicy::new(vec![], LOOPBACK, 10).principal(None).can_publish);
        assert!(!AccessPolicy::new(vec![], ANY, 10).principal(None).can_publish);
    }

    #[test]
    fn open_mode_takes_only_loopback_hosts_and_declared_json() {
        let open = AccessPolicy::new(vec![], LOOPBACK, 10);
        for host in ["localhost:8080", "127.0.0.1:1", "127.9.9.9", "[::1]:8080", "LOCALHOST", "app.localhost:3000"] {
            assert_eq!(open.check_open_request(Some(host), None, false), Ok(()), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1", "[::2]:80", ""] {
            assert_eq!(open.check_open_request(Some(host), None, false), Err(OpenRequestRefusal::Host), "{host}");
        }
        assert_eq!(open.check_open_request(None, None, false), Err(OpenRequestRefusal::Host));
        let json = Some("application/json; charset=utf-8");
        assert_eq!(open.check_open_request(Some("localhost"), json, true), Ok(()));
        for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let refused = open.check_open_request(Some("localhost"), content_type, true);
            assert_eq!(refused, Err(OpenRequestRefusal::ContentType), "{content_type:?}");
        }
        // With keys, the key is the protection.
        let keyed = AccessPolicy::new(vec!["k".into()], LOOPBACK, 10);
        assert_eq!(keyed.check_open_request(Some("evil.example"), Some("text/plain"), true), Ok(()));
    }

    #[test]
    fn protected_mode_admits_anonymous_connections_from_loopback_only() {
        let network: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped_loopback: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let protected = AccessPolicy::new(vec![], false, 10);
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, Some("127.0.0.1".parse().unwrap())), Ok(()));
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, Some("::1".parse().unwrap())), Ok(()));
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, Some(mapped_loopback)), Ok(()));
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, Some(network)), Err(UpgradeRefusal::AnonymousFromNetwork));
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, None), Err(UpgradeRefusal::AnonymousFromNetwork));
        let open = AccessPolicy::new(vec![], false, 10)
            .with_authentication(Authentication { allow_anonymous: true, ..Authentication::default() });
        assert_eq!(open.admit_upgrade(None, LOCAL_HOST, Some(network)), Ok(()));
        let message = UpgradeRefusal::AnonymousFromNetwork.to_request_error().message;
        assert!(message.contains("JWT_SECRET") && message.contains("ALLOW_ANONYMOUS"), "{message}");
    }

    #[test]
    fn with_tokens_nothing_but_ping_is_allowed_before_authenticating() {
        let policy = requiring_tokens(vec![], true);
        let anonymous = Principal::default();
        for action in [
            Action::Subscribe { project_id: "p", held: 0 },
            Action::Unsubscribe,
            Action::Forward { project_id: "p" },
            Action::Publish { project_id: "p" },
        ] {
            assert_eq!(policy.check(&anonymous, action).unwrap_err().code, ErrorCode::Unauthorized, "{action:?}");
        }
        // A network peer may connect to authenticate: tokens are the protection then.
        assert_eq!(policy.admit_upgrade(None, LOCAL_HOST, Some("10.1.2.3".parse().unwrap())), Ok(()));
    }

    #[test]
    fn subscription_limit() {
        let policy = AccessPolicy::new(vec![], LOOPBACK, 2);
        let anyone = Principal::default();
        assert!(policy.check(&anyone, Action::Subscribe { project_id: "p", held: 1 }).is_ok());
        let refused = policy.check(&anyone, Action::Subscribe { project_id: "p", held: 2 });
        assert_eq!(refused.unwrap_err().code, ErrorCode::TooManySubscriptions);
    }

    fn with_origins(policy: AccessPolicy, origins: &[&str]) -> AccessPolicy {
        let origins: Vec<String> = origins.iter().map(|origin| origin.to_string()).collect();
        policy.with_authentication(Authentication {
            origins: OriginAllowList::new(&origins),
            ..Authentication::default()
        })
    }

    #[test]
    fn without_tokens_pages_connect_only_from_this_machine_or_allowed_origins() {
        let loopback: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        for policy in [AccessPolicy::new(vec![], LOOPBACK, 10), AccessPolicy::new(vec![], ANY, 10)] {
            let policy = with_origins(policy, &["https://dash.example.com"]);
            for origin in ["http://localhost:5173", "http://[::1]", "https://dash.example.com"] {
                assert_eq!(policy.admit_upgrade(Some(origin), LOCAL_HOST, loopback), Ok(()), "{origin}");
            }
            for origin in ["https://evil.example", "null", "https://dash.example.com.evil.example"] {
                let refused = policy.admit_upgrade(Some(origin), LOCAL_HOST, loopback);
                assert_eq!(refused, Err(UpgradeRefusal::Origin), "{origin}");
            }
        }
        // ALLOW_ANONYMOUS opens the gateway to every address, not to every site's pages.
        let anyone = AccessPolicy::new(vec![], ANY, 10)
            .with_authentication(Authentication { allow_anonymous: true, ..Authentication::default() });
        assert_eq!(anyone.admit_upgrade(Some("https://evil.example"), None, None), Err(UpgradeRefusal::Origin));
        assert_eq!(anyone.admit_upgrade(None, Some("gateway.example"), None), Ok(()));
    }

    #[test]
    fn with_tokens_an_empty_allow_list_admits_any_origin_and_name() {
        let policy = requiring_tokens(vec![], LOOPBACK);
        let evil = Some("https://evil.example");
        assert_eq!(policy.admit_upgrade(evil, Some("evil.example"), Some("127.0.0.1".parse().unwrap())), Ok(()));
    }

    #[test]
    fn where_loopback_is_trusted_a_rebound_name_is_refused() {
        let loopback: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        for policy in [AccessPolicy::new(vec![], LOOPBACK, 10), AccessPolicy::new(vec![], ANY, 10)] {
            for host in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example"] {
                assert_eq!(policy.admit_upgrade(None, Some(host), loopback), Err(UpgradeRefusal::Host), "{host}");
                assert_eq!(policy.admit_local_caller(Some(host), loopback), Err(LocalCallerRefusal::Host), "{host}");
            }
            assert_eq!(policy.admit_local_caller(None, loopback), Err(LocalCallerRefusal::Host));
        }
        let message = UpgradeRefusal::Host.to_request_error();
        assert_eq!(message.code, ErrorCode::Forbidden);
        assert!(message.message.contains("loopback host"), "{}", message.message);
    }

    #[test]
    fn protected_mode_judges_the_client_address_and_open_mode_its_loopback_bind() {
        let behind_local_proxy = |policy: &AccessPolicy| {
            let proxy: IpAddr = "127.0.0.1".parse().unwrap();
            policy.client_address(Some(proxy), &["203.0.113.9"])
        };
        let proxies = TrustedProxies::parse(&["127.0.0.1".to_owned()]).unwrap();
        let limits = || Limits { trusted_proxies: proxies.clone(), ..Limits::default() };
        let protected = AccessPolicy::new(vec![], ANY, 10).with_limits(limits());
        let client = behind_local_proxy(&protected);
        assert_eq!(client, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(protected.admit_local_caller(LOCAL_HOST, client), Err(LocalCallerRefusal::FromNetwork));
        assert_eq!(protected.admit_upgrade(None, LOCAL_HOST, client), Err(UpgradeRefusal::AnonymousFromNetwork));
        // Bound to loopback, whoever reaches the port is on this machine or let in by it.
        let open = AccessPolicy::new(vec![], LOOPBACK, 10).with_limits(limits());
        assert_eq!(open.admit_local_caller(LOCAL_HOST, behind_local_proxy(&open)), Ok(()));
        let message = LocalCallerRefusal::FromNetwork.to_request_error();
        assert_eq!(message.code, ErrorCode::Unauthorized);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_its_credentials_are_not() {
        let policy = AccessPolicy::new(vec!["Key1".into()], ANY, 10);
        for authorization in ["Bearer Key1", "bearer Key1", "BEARER Key1", "bEaReR  Key1 ", "Bearer\tKey1"] {
            assert!(policy.principal(Some(authorization)).has_key, "{authorization}");
        }
        for authorization in ["Bearer key1", "BearerKey1", "Basic Key1", "Key1", "Bearer", ""] {
            assert!(!policy.principal(Some(authorization)).has_key, "{authorization}");
        }
    }

    #[test]
    fn with_tokens_presence_is_read_with_a_publish_key_or_a_token_for_the_project() {
        let policy = requiring_tokens(vec!["k".into()], ANY);
        let read = Action::ReadPresence { project_id: "p" };
        assert_eq!(policy.check(&policy.principal(Some("Bearer k")), read).map_err(|error| error.code), Ok(()));
        let anonymous = policy.check(&Principal::default(), read);
        assert_eq!(anonymous.unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn a_key_with_the_same_bytes_in_another_order_is_not_the_key() {
        // Differences that cancel out when combined by XOR instead of OR.
        let policy = AccessPolicy::new(vec!["key-ab".into()], ANY, 10);
        assert!(!policy.principal(Some("Bearer key-ba")).has_key);
        assert!(policy.principal(Some("Bearer key-ab")).has_key);
    }

    /// A policy that requires connection tokens (HS256 with a test secret), with these publish
    /// keys.
    fn requiring_tokens(publish_keys: Vec<String>, loopback_only: bool) -> AccessPolicy {
        let verifier = token::TokenVerifier::with_secret(
            b"0123456789abcdef0123456789abcdef",
            token::VerifierSettings { issuer: None, audience: None, leeway_secs: 0 },
        )
        .unwrap();
        AccessPolicy::new(publish_keys, loopback_only, 10)
            .with_authentication(Authentication { verifier: Some(Arc::new(verifier)), ..Authentication::default() })
    }

    /// A principal holding a verified token of `user_id` with `scope` (a space-separated list).
    fn with_token(user_id: &str, scope: &str) -> Principal {
        let identity = Identity {
            user_id: user_id.into(),
            expires_at: token::MAX_EXPIRY,
            issued_at: 0,
            projects: token::ProjectPatterns::parse(&["*".to_owned()]),
            scopes: Scopes::parse(Some(scope)),
            info: None,
        };
        Principal { identity: Some(Arc::new(identity)), ..Principal::default() }
    }

    #[test]
    fn deciding_an_approval_takes_the_approve_scope_which_no_other_scope_or_key_implies() {
        let policy = requiring_tokens(vec!["k".into()], true);
        let decide = Action::Decide { project_id: "acme" };
        assert_eq!(policy.check(&with_token("lead", "subscribe approve"), decide), Ok(()));
        for scope in ["subscribe publish forward admin", "subscribe"] {
            let refused = policy.check(&with_token("dev", scope), decide).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Forbidden, "{scope}");
            assert!(refused.message.contains("decide the approvals of"), "{}", refused.message);
        }
        // A publish key is a service's: it publishes, but a person decides.
        let refused = policy.check(&policy.principal(Some("Bearer k")), decide).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unauthorized);
    }

    #[test]
    fn publishers_get_a_services_budget_and_authenticating_changes_it_only_across_that_line() {
        let policy = AccessPolicy::new(vec!["k".into()], ANY, 10);
        let client = policy.request_budget(&Principal::default());
        assert!(!client.is_service());
        assert!(policy.request_budget(&policy.principal(Some("Bearer k"))).is_service());
        let open = AccessPolicy::new(vec![], LOOPBACK, 10);
        assert!(open.request_budget(&open.principal(None)).is_service(), "open publishing is a service's");
        let publisher = with_token("svc", "subscribe publish");
        assert!(policy.request_budget(&publisher).is_service());
        assert!(!policy.request_budget(&with_token("alice", "subscribe forward")).is_service());
        // A spent client budget stays spent through an authenticate that keeps it a client's.
        assert!(!policy.budget_changes(&client, &with_token("alice", "subscribe forward")));
        assert!(policy.budget_changes(&client, &publisher));
        let service = policy.request_budget(&publisher);
        assert!(!policy.budget_changes(&service, &publisher));
    }

    #[test]
    fn idle_publish_api_callers_are_forgotten() {
        // One request refills in a millisecond at 1000 a second.
        let limits = Limits { api: ApiBudgets::new(Rate::new(1000, 1)), ..Limits::default() };
        let policy = AccessPolicy::new(vec!["k".into()], ANY, 10).with_limits(limits);
        assert_eq!(
            policy.check_api_rate(&policy.principal(Some("Bearer k")), Some("Bearer k")).map_err(|error| error.code),
            Ok(())
        );
        assert_eq!(policy.limits.api.tracked(), 1);
        std::thread::sleep(Duration::from_millis(20));
        policy.forget_idle_api_callers();
        assert_eq!(policy.limits.api.tracked(), 0, "the budget of a caller idle for a refill is dropped");
    }
}
