//! The access policy built from its settings ([`AccessSettings`]): the publish keys, how
//! connections authenticate, and the abuse limits; and [`check_token`], the same verification
//! for `agenticai-websocket check-token`.

use std::sync::Arc;

use super::{
    client_address::TrustedProxies,
    connections::{ConnectionCaps, ConnectionLimits},
    jwks::Jwks,
    origin::OriginAllowList,
    rate::{ApiBudgets, ClientRates, Rate},
    token::{TokenVerifier, VerifierSettings},
    AccessPolicy, Authentication, Limits,
};
use crate::{background::BackgroundLoops, config::AccessSettings};

impl AccessPolicy {
    /// The policy its settings describe; `loopback_only`: every address the server binds is
    /// a loopback one. With JWT_JWKS_URL the keys are fetched now, and refreshed by a loop of
    /// `loops`, so it must be called inside the server's runtime.
    pub(crate) fn configure(
        settings: &AccessSettings,
        loopback_only: bool,
        loops: &BackgroundLoops,
    ) -> anyhow::Result<Self> {
        Ok(AccessPolicy::new(
            settings.publish_api_keys.clone(),
            loopback_only,
            settings.max_subscriptions_per_connection.get(),
        )
        .with_authentication(Authentication::configure(settings, loops)?)
        .with_limits(Limits::configure(settings)?))
    }
}

impl Authentication {
    /// A verifier for JWT_SECRET or JWT_JWKS_URL, the protected mode's ALLOW_ANONYMOUS, and
    /// ALLOWED_ORIGINS.
    fn configure(settings: &AccessSettings, loops: &BackgroundLoops) -> anyhow::Result<Self> {
        let verifier = configured_verifier(settings)?.map(|(verifier, jwks)| {
            if let Some(jwks) = jwks {
                jwks.refresh_in_background(loops);
            }
            Arc::new(verifier)
        });
        Ok(Authentication {
            verifier,
            allow_anonymous: settings.allow_anonymous,
            origins: OriginAllowList::new(&settings.allowed_origins),
        })
    }
}

/// The verifier JWT_SECRET or JWT_JWKS_URL configure (the secret wins when both are set), with
/// the issuer's key set when it is a JWKS, whose keys are fetched on first use.
fn configured_verifier(settings: &AccessSettings) -> anyhow::Result<Option<(TokenVerifier, Option<Arc<Jwks>>)>> {
    let verifier_settings = || VerifierSettings {
        issuer: settings.jwt_issuer.clone().filter(|issuer| !issuer.is_empty()),
        audience: settings.jwt_audience.clone().filter(|audience| !audience.is_empty()),
        leeway_secs: settings.jwt_leeway.as_secs(),
    };
    Ok(match (settings.jwt_secret(), settings.jwt_jwks_url()) {
        (Some(secret), _) => Some((
            TokenVerifier::with_secret(secret.as_bytes(), verifier_settings())
                .map_err(|error| anyhow::anyhow!("JWT_SECRET: {error}"))?,
            None,
        )),
        (None, Some(url)) => {
            let jwks = Arc::new(Jwks::new(url.to_owned()));
            Some((TokenVerifier::with_jwks(jwks.clone(), verifier_settings()), Some(jwks)))
        }
        (None, None) => None,
    })
}

/// Why `check-token` accepted no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenCheckError {
    /// The settings name no key: a configuration problem, not the token's.
    #[error("JWT_SECRET, JWT_JWKS_URL: neither is set, so the gateway verifies no token")]
    NoKeys,
    /// The settings name a key that cannot be used.
    #[error("{0:#}")]
    Unusable(anyhow::Error),
    /// The token is one the gateway would refuse.
    #[error("the token is refused ({label}): {reason}")]
    Refused { label: &'static str, reason: String },
}

/// Verifies `token` as the gateway would with `settings` (key, issuer, audience, leeway) and
/// returns its claims. The claims are read only once the signature is known good.
pub async fn check_token(settings: &AccessSettings, token: &str) -> Result<serde_json::Value, TokenCheckError> {
    let (verifier, _) =
        configured_verifier(settings).map_err(TokenCheckError::Unusable)?.ok_or(TokenCheckError::NoKeys)?;
    verifier
        .verify(token)
        .await
        .map_err(|error| TokenCheckError::Refused { label: error.label(), reason: error.to_string() })?;
    jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|error| TokenCheckError::Refused {
        label: "malformed",
        reason: format!("its claims are not a JSON object: {error}"),
    })
}

impl Limits {
    /// The abuse limits. MAX_CONNECTIONS defaults to what the open-files limit allows, after
    /// raising its soft value to the hard one (a container's soft limit is often far below what
    /// the task may hold).
    fn configure(settings: &AccessSettings) -> anyhow::Result<Self> {
        let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(error) => {
                log::warn!(error:% = error; "cannot read or raise the open-files limit; assuming 1024");
                1024
            }
        };
        let caps = ConnectionCaps {
            max_connections: settings.max_connections(open_files),
            max_per_user: settings.max_connections_per_user,
            max_per_ip: settings.max_connections_per_ip,
        };
        if caps.max_connections as u64 > open_files {
            log::warn!(
                max_connections = caps.max_connections, open_files;
                "MAX_CONNECTIONS is above the open-files limit: accepts will fail before the cap answers 503"
            );
        }
        Ok(Limits {
            trusted_proxies: TrustedProxies::parse(&settings.trusted_proxies)
                .map_err(|reason| anyhow::anyhow!("TRUSTED_PROXIES: {reason}"))?,
            connections: ConnectionLimits::new(caps),
            client_rates: ClientRates {
                client: Rate::new(settings.client_rate_per_second, settings.client_rate_burst.get()),
                service: Rate::new(settings.service_rate_per_second, settings.service_rate_burst.get()),
                close_after: settings.client_rate_close_after,
            },
            api: ApiBudgets::new(Rate::new(settings.api_rate_per_second, settings.api_rate_burst.get())),
        })
    }
}
