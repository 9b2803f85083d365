//! The issuer's public keys (JWT_JWKS_URL), cached by `kid`.
//!
//! The URL is configuration only: nothing in a token decides where keys are fetched from. A
//! token naming a `kid` that is not cached causes one refetch, with at most one fetch in flight
//! and at most one per [`MIN_REFETCH_INTERVAL`]: a flood of tokens with made-up kids costs the
//! issuer one request per interval, and each of those tokens is refused as `unknown_key`. The
//! set is also refreshed in the background every [`REFRESH_INTERVAL`], so a rotated-in key is
//! usually known before the first token signed with it arrives.
//!
//! Only signing keys of asymmetric families are taken (RSA, EC P-256/P-384, Ed25519); a symmetric
//! (`oct`) key or one marked for encryption is ignored, so a JWKS can never turn a public key into
//! an HMAC secret.
//!
//! The URL may carry a password (`https://user:password@issuer/...`, sent as basic auth): logs
//! and messages show it as `***` ([`crate::config::redact_url`]), and fetch errors leave the URL
//! out.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
    Algorithm, DecodingKey,
};

use super::token::TokenError;
use crate::background::BackgroundLoops;

/// Shortest time between two fetches caused by unknown kids.
pub(crate) const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Background refresh of the key set.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// One fetch's limit.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One usable key and the algorithms a token signed with it may name.
pub(crate) struct JwksKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

struct Cached {
    keys: HashMap<String, Arc<JwksKey>>,
    last_fetch: Option<Instant>,
}

pub(crate) struct Jwks {
    url: String,
    /// `url` with any password as `***`, for logs.
    shown_url: String,
    client: reqwest::Client,
    cached: Mutex<Cached>,
    /// Held while a fetch is in flight: callers that need one wait for it instead of starting
    /// another.
    fetching: tokio::sync::Mutex<()>,
    /// Bumped whenever the key set changes, so tokens verified with a removed key are verified
    /// again.
    generation: AtomicU64,
}

impl Jwks {
    pub(crate) fn new(url: String) -> Self {
        Jwks {
            shown_url: crate::config::redact_url(&url),
            url,
            client: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build().unwrap_or_default(),
            cached: Mutex::new(Cached { keys: HashMap::new(), last_fetch: None }),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The URL as it may be shown: with any password as `***`.
    pub(crate) fn shown_url(&self) -> &str {
        &self.shown_url
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached_key(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.lock().keys.get(kid).cloned()
    }

    /// The key named `kid`, fetching the set again if it is unknown (see the module doc).
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<JwksKey>, TokenError> {
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // The fetch this caller waited for may have brought it.
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let (recently, empty) = {
            let cached = self.lock();
            (cached.last_fetch.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL), cached.keys.is_empty())
        };
        if recently {
            return Err(if empty { TokenError::KeysUnavailable } else { TokenError::UnknownKey });
        }
        match self.fetch_holding_lock().await {
            Ok(()) => self.cached_key(kid).ok_or(TokenError::UnknownKey),
            Err(error) => {
                log::warn!(url = self.shown_url.as_str(), error = error.as_str(); "cannot fetch the JWKS");
                Err(if self.lock().keys.is_empty() { TokenError::KeysUnavailable } else { TokenError::UnknownKey })
            }
        }
    }

    /// Fetches the set now (waiting for a fetch in flight first), as at start-up.
    pub(crate) async fn refresh(&self) -> Result<(), String> {
        let _fetching = self.fetching.lock().await;
        self.fetch_holding_lock().await
    }

    /// Fetches the set and replaces the cached keys (kept as they were when the fetch fails).
    /// The caller holds `fetching`.
    async fn fetch_holding_lock(&self) -> Result<(), String> {
        self.lock().last_fetch = Some(Instant::now());
        let response = self.client.get(&self.url).send().await.map_err(describe_fetch_error)?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(describe_fetch_error)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the document is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|error| format!("not a JWKS: {error}"))?;
        let keys: HashMap<String, Arc<JwksKey>> = set.keys.iter().filter_map(usable_key).collect();
        let mut cached = self.lock();
        let changed = cached.keys.len() != keys.len() || keys.keys().any(|kid| !cached.keys.contains_key(kid));
        cached.keys = keys;
        if changed {
            self.generation.fetch_add(1, Ordering::Relaxed);
            log::info!(url = self.shown_url.as_str(), keys = cached.keys.len(); "JWKS loaded");
        }
        Ok(())
    }

    /// Fetches the set now, so the first tokens need not wait (a failure is retried when a token
    /// arrives, refused meanwhile as keys_unavailable), then every [`REFRESH_INTERVAL`] until
    /// the gateway's background loops stop.
    pub(crate) fn refresh_in_background(self: &Arc<Self>, loops: &BackgroundLoops) {
        let jwks = self.clone();
        loops.spawn(async move {
            if let Err(error) = jwks.refresh().await {
                log::warn!(error = error.as_str(); "cannot fetch the JWKS at start-up; tokens wait for it");
            }
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                if let Err(error) = jwks.refresh().await {
                    log::warn!(url = jwks.shown_url.as_str(), error = error.as_str(); "JWKS refresh failed; keeping the keys it had");
                }
            }
        });
    }
}

/// What went wrong with a fetch, and why (its causes), without the URL reqwest's errors name:
/// it may hold a password.
fn describe_fetch_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut description = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(reason) = cause {
        description.push_str(&format!(": {reason}"));
        cause = reason.source();
    }
    description
}

/// A JWK the gateway verifies with, by its kid; None for anything else.
fn usable_key(jwk: &Jwk) -> Option<(String, Arc<JwksKey>)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        _ => return None,
    };
    // A key that names its algorithm allows that one only (when it is of the key's family).
    let algorithms = match jwk.common.key_algorithm.and_then(|alg| Algorithm::try_from(alg).ok()) {
        Some(alg) if family.contains(&alg) => vec![alg],
        Some(_) => return None,
        None => family,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Arc::new(JwksKey { key, algorithms })))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const RSA_N: &str = "z1YjYg3WdvvZbb_EBOs69OLodgCsE5Ip-5_GJ_Zty_oKtYNDJlui8Vtqi22p4epEnywJ8Zpu_m4EpbbAqmJLYe47_frvGvai39Lphoh0ejx7vKxyi_vixVOJ8NFchik6YZ5sYvZOYnyL643fFsic2lOYtMhjfBa7bV4WWzyWJGAVBfHur9zdDbvpXpnIIoS1JKtjk4xWQEcfzhQVmGbOINtfo27HB_sZuEckwihY0q1A6XH6jdTjkS02mqKksYZJxS2s1s7Hyvn9vBZyeZe-TPtNcFXzZiF7RaGOY2oT4MmkQpOi7PvSxWXdRpSiUIXnYJ9g_IbUEa-sYY2PdZ0pnQ";

    fn rsa(extra: Value) -> Value {
        let mut jwk = json!({"kty": "RSA", "kid": "k", "n": RSA_N, "e": "AQAB"});
        jwk.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        jwk
    }

    /// The algorithms a JWK is taken for; None when it is ignored.
    fn algorithms(jwk: Value) -> Option<Vec<Algorithm>> {
        let jwk: Jwk = serde_json::from_value(jwk).expect("a well-formed JWK");
        usable_key(&jwk).map(|(kid, key)| {
            assert_eq!(kid, "k");
            key.algorithms.clone()
        })
    }

    #[test]
    fn a_symmetric_key_never_becomes_an_hmac_secret() {
        let oct = json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0LXRoYXQtaXMtYXQtbGVhc3QtMzItYnl0ZXMtbG9uZw"});
        assert_eq!(algorithms(oct.clone()), None);
        let mut named = oct;
        named["alg"] = json!("HS256");
        assert_eq!(algorithms(named), None);
    }

    #[test]
    fn an_encryption_key_is_ignored() {
        assert_eq!(algorithms(rsa(json!({"use": "enc"}))), None);
        assert!(algorithms(rsa(json!({"use": "sig"}))).is_some());
    }

    #[test]
    fn a_key_naming_an_algorithm_of_another_family_is_ignored() {
        assert_eq!(algorithms(rsa(json!({"alg": "HS256"}))), None);
        assert_eq!(algorithms(rsa(json!({"alg": "ES256"}))), None);
    }

    #[test]
    fn a_key_naming_its_algorithm_allows_that_one_only() {
        assert_eq!(algorithms(rsa(json!({"alg": "RS384"}))), Some(vec![Algorithm::RS384]));
        assert_eq!(algorithms(rsa(json!({}))), Some(vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]));
    }

    #[test]
    fn curves_map_to_their_own_algorithm() {
        let p384 = json!({"kty": "EC", "kid": "k", "crv": "P-384",
            "x": "mVlg0Dhm_Fc5VnpoivNhsbdEdnZngiHS1t1G7ZB4RJ9hqmoBpBLVXkXIIumdessb",
            "y": "Q9ert4EkjcFgwcyIFwRmvczkcdISkYcKjmA4CF-4RlnfkXeNf4rR6cG84J5_FN_Y"});
        assert_eq!(algorithms(p384.clone()), Some(vec![Algorithm::ES384]));
        let mut p384_claiming_es256 = p384;
        p384_claiming_es256["alg"] = json!("ES256");
        assert_eq!(algorithms(p384_claiming_es256), None);
        let ed25519 =
            json!({"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": "osj-qY4g-tk8EGL2PP7YF6Gew6IIJnLZ0bFlYK27cGY"});
        assert_eq!(algorithms(ed25519), Some(vec![Algorithm::EdDSA]));
        let x25519 =
            json!({"kty": "OKP", "kid": "k", "crv": "X25519", "x": "osj-qY4g-tk8EGL2PP7YF6Gew6IIJnLZ0bFlYK27cGY"});
        assert_eq!(algorithms(x25519), None);
        let p256 = json!({"kty": "EC", "kid": "k", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tG8TF4lIHv4Hg4ydLkmZk-1DQbGo"});
        assert_eq!(algorithms(p256), Some(vec![Algorithm::ES256]));
        // The library builds an Ed25519 key from any octet key pair's `x`, whatever its curve.
        let okp_p256 =
            json!({"kty": "OKP", "kid": "k", "crv": "P-256", "x": "osj-qY4g-tk8EGL2PP7YF6Gew6IIJnLZ0bFlYK27cGY"});
        assert_eq!(algorithms(okp_p256), None);
    }

    #[test]
    fn a_key_without_a_kid_is_ignored() {
        let mut anonymous = rsa(json!({}));
        anonymous.as_object_mut().unwrap().remove("kid");
        assert_eq!(algorithms(anonymous), None);
    }
}
