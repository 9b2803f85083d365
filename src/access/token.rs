//! Connection tokens (JWT): what a verified token grants ([`Identity`]) and how a token is
//! verified ([`TokenVerifier`]).
//!
//! The accepted algorithms come from the configured key, never from the token: an HMAC secret
//! (`JWT_SECRET`) accepts HS256/384/512 only; a key from the issuer's JWKS (`JWT_JWKS_URL`)
//! accepts only its own family (RSA: RS256/384/512, EC: the curve's ES256 or ES384, Ed25519:
//! EdDSA). So `alg: none` (not an algorithm the library knows) and an HMAC token "signed" with
//! an RSA public key (algorithm confusion) are refused. Verification is `jsonwebtoken`'s.
//!
//! Claims: `sub` (the user id, a non-empty string, required), `exp` (required, at most
//! [`MAX_EXPIRY`]), `nbf` and `iat` (honoured), `iss`/`aud` (required when JWT_ISSUER/JWT_AUDIENCE
//! are set: `iss` a string equal to it, `aud` that string or an array holding it), `projects` (project
//! ids, `acme-*` matches by prefix, `*` alone matches all; absent: none), `scope`
//! (space-separated: `subscribe`, `forward`, `publish`, `admin`; absent: `subscribe forward`),
//! `info` (any JSON, kept for presence, at most [`MAX_INFO_BYTES`] serialized).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwks::Jwks;

/// Longest token accepted, in bytes: bounds the work and the cache below.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest `info` claim kept, serialized.
pub(crate) const MAX_INFO_BYTES: usize = 1024;
/// Most project patterns one token may carry.
pub(crate) const MAX_PROJECT_PATTERNS: usize = 256;
/// The latest `exp` accepted: the last second of the year 9999 (the largest RFC 3339 date).
/// Anything later is not a date an issuer meant, and would overflow the expiry arithmetic
/// (`exp` plus the leeway, the refresh advice).
pub(crate) const MAX_EXPIRY: u64 = 253_402_300_799;
/// Verified tokens remembered (see [`VerifiedTokens`]).
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// What the connection's token allows; held by the session for the token's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub user_id: Arc<str>,
    /// `exp`, unix seconds.
    pub expires_at: u64,
    /// `iat` when given, else the time of verification: the start of the lifetime the refresh
    /// advice is computed from.
    pub issued_at: u64,
    pub projects: ProjectPatterns,
    pub scopes: Scopes,
    /// The token's `info` claim, serialized (display name, agent kind), for presence.
    pub info: Option<Arc<str>>,
}

impl Identity {
    /// When the client should refresh: at 80% of the token's lifetime.
    pub(crate) fn refresh_at(&self) -> u64 {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        self.issued_at + lifetime * 4 / 5
    }
}

/// The `projects` claim: exact ids and prefixes (`acme-*`), or everything (`*`). Held per
/// connection for the token's lifetime, so it is one allocation however many patterns: the
/// patterns joined by newlines (which no project id may contain), prefixes ending in `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProjectPatterns {
    all: bool,
    joined: Box<str>,
}

impl ProjectPatterns {
    pub(crate) fn parse(patterns: &[String]) -> Self {
        let all = patterns.iter().any(|pattern| pattern == "*");
        let kept: Vec<&str> = patterns.iter().map(String::as_str).filter(|pattern| !pattern.contains('\n')).collect();
        ProjectPatterns { all, joined: kept.join("\n").into() }
    }

    pub(crate) fn matches(&self, project_id: &str) -> bool {
        self.all
            || self.joined.split('\n').any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => project_id.starts_with(prefix),
                None => !pattern.is_empty() && pattern == project_id,
            })
    }
}

/// The `scope` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scopes(u8);

impl Scopes {
    pub(crate) const SUBSCRIBE: Scopes = Scopes(1);
    pub(crate) const FORWARD: Scopes = Scopes(2);
    pub(crate) const PUBLISH: Scopes = Scopes(4);
    pub(crate) const ADMIN: Scopes = Scopes(8);
    /// Deciding a project's approvals (not in the default set).
    pub(crate) const APPROVE: Scopes = Scopes(16);

    /// Space-separated OAuth-style names; unknown ones are ignored. Absent: subscribe forward.
    pub(crate) fn parse(scope: Option<&str>) -> Self {
        let Some(scope) = scope else {
            return Scopes(Self::SUBSCRIBE.0 | Self::FORWARD.0);
        };
        Scopes(scope.split_ascii_whitespace().fold(0, |bits, name| {
            bits | match name {
                "subscribe" => Self::SUBSCRIBE.0,
                "forward" => Self::FORWARD.0,
                "publish" => Self::PUBLISH.0,
                "admin" => Self::ADMIN.0,
                "approve" => Self::APPROVE.0,
                _ => 0,
            }
        }))
    }

    pub(crate) fn has(self, scope: Scopes) -> bool {
        self.0 & scope.0 == scope.0
    }
}

/// Why a token was refused. The label is for metrics; the client only ever learns that its
/// token is not valid (and, for an expired one, that it expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's signature or algorithm is not accepted")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer or audience is not accepted")]
    WrongIssuerOrAudience,
    #[error("the token's expiry (exp) is beyond the year 9999")]
    ExpiryOutOfRange,
    #[error("the token lacks a valid claim (sub, exp, projects, scope, info)")]
    BadClaims,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
}

impl TokenError {
    pub(crate) fn label(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            TokenError::ExpiryOutOfRange => "exp_out_of_range",
            TokenError::BadClaims => "bad_claims",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }

    fn of(error: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongIssuerOrAudience,
            // Required (configured) and absent, or not a string (an array of them for `aud`).
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim)
                if claim == "iss" || claim == "aud" =>
            {
                TokenError::WrongIssuerOrAudience
            }
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::MissingAlgorithm => TokenError::BadSignature,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject | ErrorKind::Json(_) => {
                TokenError::BadClaims
            }
            _ => TokenError::Malformed,
        }
    }
}

/// The claims the gateway reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: Option<u64>,
    /// Compared by the library; kept to refuse an array where the issuer is configured.
    iss: Option<serde_json::Value>,
    #[serde(default)]
    projects: Vec<String>,
    scope: Option<String>,
    info: Option<Box<serde_json::value::RawValue>>,
}

/// Where the keys come from.
enum Keys {
    Secret(DecodingKey),
    Jwks(Arc<Jwks>),
}

/// Verifies tokens against the configured key(s), with the configured issuer, audience and
/// leeway.
pub(crate) struct TokenVerifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    verified: VerifiedTokens,
}

/// How the verifier is configured.
pub(crate) struct VerifierSettings {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

impl TokenVerifier {
    /// HS256/384/512 with a shared secret.
    pub(crate) fn with_secret(secret: &[u8], settings: VerifierSettings) -> Result<Self, String> {
        let key = DecodingKey::from_secret(secret).map_err(|error| error.to_string())?;
        Ok(Self::new(Keys::Secret(key), settings))
    }

    /// The issuer's public keys, fetched from its JWKS endpoint.
    pub(crate) fn with_jwks(jwks: Arc<Jwks>, settings: VerifierSettings) -> Self {
        Self::new(Keys::Jwks(jwks), settings)
    }

    fn new(keys: Keys, settings: VerifierSettings) -> Self {
        TokenVerifier {
            keys,
            issuer: settings.issuer,
            audience: settings.audience,
            leeway_secs: settings.leeway_secs,
            verified: VerifiedTokens::default(),
        }
    }

    /// What the key source is, for the start-up log.
    pub(crate) fn describe(&self) -> String {
        match &self.keys {
            Keys::Secret(_) => "JWT_SECRET (HS256, HS384, HS512)".to_owned(),
            Keys::Jwks(jwks) => format!("JWKS from {} (RS*, ES256, ES384, EdDSA)", jwks.shown_url()),
        }
    }

    /// The identity a token grants, or why it grants none. Shared: every connection presenting
    /// the same token holds the same allocation.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let generation = match &self.keys {
            Keys::Secret(_) => 0,
            Keys::Jwks(jwks) => jwks.generation(),
        };
        if let Some(identity) = self.verified.get(token, now, self.leeway_secs, generation) {
            return Ok(identity);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|error| TokenError::of(&error))?;
        let identity = Arc::new(match &self.keys {
            Keys::Secret(key) => {
                self.decode(token, key, &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512], now)?
            }
            Keys::Jwks(jwks) => {
                // The kid picks a key among the configured issuer's; nothing in the token chooses
                // where keys are fetched from.
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let key = jwks.key(kid).await?;
                self.decode(token, &key.key, &key.algorithms, now)?
            }
        });
        self.verified.insert(token, &identity);
        Ok(identity)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithms: &[Algorithm],
        now: u64,
    ) -> Result<Identity, TokenError> {
        let mut validation = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::HS256));
        validation.algorithms = algorithms.to_vec();
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only compared when present: a token
        // without it was not issued for this gateway.
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims =
            jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|error| TokenError::of(&error))?.claims;
        // The library accepts an `iss` array holding the issuer; RFC 7519 makes `iss` one string.
        if self.issuer.is_some() && !matches!(claims.iss, Some(serde_json::Value::String(_))) {
            return Err(TokenError::WrongIssuerOrAudience);
        }
        if claims.exp > MAX_EXPIRY {
            return Err(TokenError::ExpiryOutOfRange);
        }
        if claims.sub.is_empty() || claims.projects.len() > MAX_PROJECT_PATTERNS {
            return Err(TokenError::BadClaims);
        }
        let info = match claims.info {
            Some(info) if info.get().len() > MAX_INFO_BYTES => return Err(TokenError::BadClaims),
            Some(info) => Some(Arc::from(info.get())),
            None => None,
        };
        Ok(Identity {
            user_id: claims.sub.into(),
            expires_at: claims.exp,
            issued_at: claims.iat.filter(|iat| *iat <= claims.exp).unwrap_or(now),
            projects: ProjectPatterns::parse(&claims.projects),
            scopes: Scopes::parse(claims.scope.as_deref()),
            info,
        })
    }
}

/// Tokens verified before, by the SHA-256 of their exact text, so a reconnect storm of clients
/// presenting the same tokens pays one signature check per token rather than one per connect (an
/// RSA check is tens of microseconds). Safe because the key stands for the whole token: the same
/// bytes carry the same signature over the same claims (and SHA-256 has no known collisions), and
/// an entry is used only while its `exp` (plus leeway) has not passed and the key set it was
/// verified against is unchanged (a JWKS change empties it).
///
/// Bounded at [`VERIFIED_CACHE_ENTRIES`] by `quick_cache` (CLOCK-Pro): an entry read again stays,
/// one never read again goes first, so a flood of one-off tokens (made up, or each client's own)
/// does not push out the tokens a storm of reconnects presents. When full, expired entries are
/// swept first, at most once a second. An entry is 32 bytes and a share of the identity
/// connections hold anyway.
struct VerifiedTokens {
    tokens: quick_cache::sync::Cache<[u8; 32], Arc<Identity>>,
    /// The key set the entries were verified against ([`super::jwks::Jwks::generation`]).
    generation: AtomicU64,
    /// The second of the last sweep of expired entries.
    swept_at: AtomicU64,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens {
            tokens: quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES),
            generation: AtomicU64::new(0),
            swept_at: AtomicU64::new(0),
        }
    }
}

impl VerifiedTokens {
    fn get(&self, token: &str, now: u64, leeway: u64, generation: u64) -> Option<Arc<Identity>> {
        if self.generation.swap(generation, Ordering::AcqRel) != generation {
            self.tokens.clear();
            return None;
        }
        self.tokens.get(&digest(token)).filter(|identity| identity.expires_at + leeway > now)
    }

    fn insert(&self, token: &str, identity: &Arc<Identity>) {
        if self.tokens.len() >= VERIFIED_CACHE_ENTRIES {
            let now = jsonwebtoken::get_current_timestamp();
            if self.swept_at.swap(now, Ordering::AcqRel) != now {
                self.tokens.retain(|_, cached| cached.expires_at > now);
            }
        }
        self.tokens.insert(digest(token), identity.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens.len()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The claims of a token minted by `agenticai-websocket token` (development and tests; a real
/// deployment's tokens come from its identity provider).
#[derive(Clone, Debug, serde::Serialize)]
pub struct MintedClaims {
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// Signs `claims` with an HS256 secret.
pub fn mint_hs256(claims: &MintedClaims, secret: &[u8]) -> Result<String, String> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).map_err(|error| error.to_string())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_patterns_match_exactly_by_prefix_or_all() {
        let patterns = ProjectPatterns::parse(&["acme-*".into(), "solo".into()]);
        assert!(patterns.matches("acme-web"));
        assert!(patterns.matches("acme-"));
        assert!(patterns.matches("solo"));
        assert!(!patterns.matches("solo2"));
        assert!(!patterns.matches("acm"));
        assert!(ProjectPatterns::parse(&["*".into()]).matches("anything"));
        assert!(!ProjectPatterns::parse(&[]).matches("anything"));
    }

    #[test]
    fn scopes_default_to_subscribe_and_forward() {
        let default = Scopes::parse(None);
        assert!(default.has(Scopes::SUBSCRIBE) && default.has(Scopes::FORWARD) && !default.has(Scopes::PUBLISH));
        let publisher = Scopes::parse(Some("publish  bogus"));
        assert!(publisher.has(Scopes::PUBLISH) && !publisher.has(Scopes::SUBSCRIBE));
        assert!(!Scopes::parse(Some("")).has(Scopes::SUBSCRIBE));
    }

    fn settings() -> VerifierSettings {
        VerifierSettings { issuer: Some("issuer".into()), audience: None, leeway_secs: 0 }
    }

    fn claims(ttl: i64) -> MintedClaims {
        let now = jsonwebtoken::get_current_timestamp();
        MintedClaims {
            sub: "alice".into(),
            exp: now.saturating_add_signed(ttl),
            iat: now,
            projects: vec!["acme-*".into()],
            scope: None,
            iss: Some("issuer".into()),
            aud: Some("anyone".into()),
            info: Some(serde_json::json!({"name": "Alice"})),
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn a_minted_token_verifies_and_grants_its_claims() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        let identity = verifier.verify(&mint_hs256(&claims(60), SECRET).unwrap()).await.unwrap();
        assert_eq!(&*identity.user_id, "alice");
        assert!(identity.projects.matches("acme-1") && !identity.projects.matches("other"));
        assert_eq!(identity.info.as_deref(), Some(r#"{"name":"Alice"}"#));
    }

    #[tokio::test]
    async fn expired_forged_and_wrong_issuer_tokens_are_refused() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        let expired = mint_hs256(&claims(-10), SECRET).unwrap();
        assert_eq!(verifier.verify(&expired).await, Err(TokenError::Expired));
        let forged = mint_hs256(&claims(60), b"another secret, just as long as it").unwrap();
        assert_eq!(verifier.verify(&forged).await, Err(TokenError::BadSignature));
        let mut elsewhere = claims(60);
        elsewhere.iss = Some("elsewhere".into());
        let elsewhere = mint_hs256(&elsewhere, SECRET).unwrap();
        assert_eq!(verifier.verify(&elsewhere).await, Err(TokenError::WrongIssuerOrAudience));
        let mut nobody = claims(60);
        nobody.sub = String::new();
        assert_eq!(verifier.verify(&mint_hs256(&nobody, SECRET).unwrap()).await, Err(TokenError::BadClaims));
        assert_eq!(verifier.verify("not.a.jwt").await.map(|_| ()), Err(TokenError::Malformed));
    }

    #[tokio::test]
    async fn an_unsigned_token_is_refused() {
        use base64::Engine as _;
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let payload = serde_json::to_string(&claims(60)).unwrap();
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"alg":"nOnE"}"#] {
            let token = format!("{}.{}.", encode(header), encode(&payload));
            assert!(verifier.verify(&token).await.is_err(), "{header}");
        }
    }

    /// A token with `claims` merged into [`claims`]'s (a `null` removes one).
    fn token_with(changes: serde_json::Value) -> String {
        let mut claims = serde_json::to_value(claims(60)).unwrap();
        for (name, value) in changes.as_object().unwrap() {
            match value {
                serde_json::Value::Null => claims.as_object_mut().unwrap().remove(name),
                value => claims.as_object_mut().unwrap().insert(name.clone(), value.clone()),
            };
        }
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    #[tokio::test]
    async fn a_configured_issuer_and_audience_are_required_and_iss_is_one_string() {
        let settings =
            VerifierSettings { issuer: Some("issuer".into()), audience: Some("gateway".into()), leeway_secs: 0 };
        let verifier = TokenVerifier::with_secret(SECRET, settings).unwrap();
        for accepted in [serde_json::json!({"aud": "gateway"}), serde_json::json!({"aud": ["other", "gateway"]})] {
            assert!(verifier.verify(&token_with(accepted.clone())).await.is_ok(), "{accepted}");
        }
        for refused in [
            serde_json::json!({"aud": null}),
            serde_json::json!({"iss": null, "aud": "gateway"}),
            serde_json::json!({"iss": null, "aud": null}),
            serde_json::json!({"iss": ["issuer"], "aud": "gateway"}),
            serde_json::json!({"iss": 7, "aud": "gateway"}),
            serde_json::json!({"aud": ["other"]}),
            serde_json::json!({"aud": "Gateway"}),
        ] {
            let verified = verifier.verify(&token_with(refused.clone())).await;
            assert_eq!(verified, Err(TokenError::WrongIssuerOrAudience), "{refused}");
        }
        // Unconfigured, neither is required.
        let open =
            TokenVerifier::with_secret(SECRET, VerifierSettings { issuer: None, audience: None, leeway_secs: 0 });
        assert!(open.unwrap().verify(&token_with(serde_json::json!({"iss": null, "aud": null}))).await.is_ok());
    }

    #[tokio::test]
    async fn an_expiry_beyond_the_year_9999_is_refused() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        for exp in [u64::MAX, 1 << 63, MAX_EXPIRY + 1] {
            let verified = verifier.verify(&token_with(serde_json::json!({"exp": exp}))).await;
            assert_eq!(verified, Err(TokenError::ExpiryOutOfRange), "{exp}");
        }
        let last = verifier.verify(&token_with(serde_json::json!({"exp": MAX_EXPIRY}))).await.unwrap();
        assert!(last.refresh_at() > last.issued_at && last.refresh_at() < MAX_EXPIRY);
    }

    #[test]
    fn refresh_is_advised_at_four_fifths_of_the_lifetime() {
        let identity = Identity {
            user_id: "u".into(),
            expires_at: 1_000,
            issued_at: 0,
            projects: ProjectPatterns::default(),
            scopes: Scopes::parse(None),
            info: None,
        };
        assert_eq!(identity.refresh_at(), 800);
    }

    #[tokio::test]
    async fn a_token_of_max_token_bytes_verifies_and_a_longer_one_is_malformed() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        // Base64 makes the length move in steps of one or two: pad until each side is hit.
        let padded = |length: usize| {
            (MAX_TOKEN_BYTES / 2..MAX_TOKEN_BYTES)
                .map(|pad| token_with(serde_json::json!({"pad": "x".repeat(pad)})))
                .find(|token| token.len() >= length)
                .unwrap()
        };
        let longest = padded(MAX_TOKEN_BYTES);
        assert_eq!(longest.len(), MAX_TOKEN_BYTES);
        assert!(verifier.verify(&longest).await.is_ok());
        let longer = padded(MAX_TOKEN_BYTES + 1);
        assert_eq!(verifier.verify(&longer).await, Err(TokenError::Malformed), "{} bytes", longer.len());
    }

    #[tokio::test]
    async fn a_token_without_sub_or_exp_lacks_a_valid_claim() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        for missing in ["sub", "exp"] {
            let verified = verifier.verify(&token_with(serde_json::json!({ missing: null }))).await;
            assert_eq!(verified, Err(TokenError::BadClaims), "without {missing}");
        }
    }

    #[tokio::test]
    async fn projects_and_info_are_bounded() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        let projects =
            |count: usize| serde_json::json!({"projects": (0..count).map(|n| format!("p{n}")).collect::<Vec<_>>()});
        assert!(verifier.verify(&token_with(projects(MAX_PROJECT_PATTERNS))).await.is_ok());
        let too_many = verifier.verify(&token_with(projects(MAX_PROJECT_PATTERNS + 1))).await;
        assert_eq!(too_many, Err(TokenError::BadClaims));
        // `info` is measured serialized: a JSON string of n bytes is n + 2 with its quotes.
        let info = |bytes: usize| serde_json::json!({"info": "i".repeat(bytes - 2)});
        let largest = verifier.verify(&token_with(info(MAX_INFO_BYTES))).await.unwrap();
        assert_eq!(largest.info.as_deref().map(str::len), Some(MAX_INFO_BYTES));
        assert_eq!(verifier.verify(&token_with(info(MAX_INFO_BYTES + 1))).await, Err(TokenError::BadClaims));
    }

    #[tokio::test]
    async fn the_lifetime_starts_at_iat_unless_iat_is_after_exp() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let earlier = verifier.verify(&token_with(serde_json::json!({"iat": now - 100, "exp": now + 100}))).await;
        let earlier = earlier.unwrap();
        assert_eq!((earlier.issued_at, earlier.refresh_at()), (now - 100, now + 60));
        let after_exp = verifier.verify(&token_with(serde_json::json!({"iat": now + 500, "exp": now + 100}))).await;
        let issued_at = after_exp.unwrap().issued_at;
        assert!((now..now + 5).contains(&issued_at), "the time of verification, not {issued_at}");
    }

    #[test]
    fn each_scope_name_grants_its_scope_also_when_repeated() {
        let named = [
            ("subscribe", Scopes::SUBSCRIBE),
            ("forward", Scopes::FORWARD),
            ("publish", Scopes::PUBLISH),
            ("admin", Scopes::ADMIN),
        ];
        for (name, scope) in named {
            assert!(Scopes::parse(Some(name)).has(scope), "{name}");
            assert!(Scopes::parse(Some(&format!("{name} publish {name}"))).has(scope), "{name} twice");
        }
    }

    fn identity(user: &str, expires_at: u64) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: user.into(),
            expires_at,
            issued_at: 0,
            projects: ProjectPatterns::default(),
            scopes: Scopes::parse(None),
            info: None,
        })
    }

    #[test]
    fn a_verified_token_is_remembered_as_itself_until_it_expires_or_the_keys_change() {
        let verified = VerifiedTokens::default();
        let alice = identity("alice", 1_000);
        verified.insert("token-a", &alice);
        assert_eq!(verified.get("token-a", 999, 0, 0), Some(alice.clone()));
        assert_eq!(verified.get("token-b", 999, 0, 0), None, "another token is not the one remembered");
        // Expired at `exp`, or `exp` plus the leeway.
        assert_eq!(verified.get("token-a", 1_000, 0, 0), None);
        assert_eq!(verified.get("token-a", 1_004, 5, 0), Some(alice.clone()));
        assert_eq!(verified.get("token-a", 1_005, 5, 0), None);
        // Another key set: forgotten, also when asked again under it.
        assert_eq!(verified.get("token-a", 999, 0, 1), None);
        assert_eq!(verified.get("token-a", 999, 0, 1), None);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_and_stays_bounded() {
        let verified = VerifiedTokens::default();
        let live = identity("live", u64::MAX / 2);
        verified.insert("live", &live);
        let expired = identity("gone", 1);
        for n in 1..VERIFIED_CACHE_ENTRIES {
            verified.insert(&format!("expired-{n}"), &expired);
        }
        verified.insert("one more", &live);
        assert_eq!(verified.get("live", 2, 0, 0), Some(live.clone()), "a live token survives the clean-up");
        for n in 0..2 * VERIFIED_CACHE_ENTRIES {
            verified.insert(&format!("live-{n}"), &live);
        }
        let held = verified.len();
        assert!(held <= VERIFIED_CACHE_ENTRIES, "{held} entries");
    }

    /// The storm the cache exists for: tokens presented again and again stay remembered while
    /// twice the cache's size of tokens seen once pass through (emptying the whole cache when
    /// full, as it did, forgot them all).
    #[test]
    fn tokens_in_use_survive_a_flood_of_one_off_tokens() {
        let verified = VerifiedTokens::default();
        let live = identity("live", u64::MAX / 2);
        let in_use: Vec<String> = (0..100).map(|n| format!("in-use-{n}")).collect();
        for token in &in_use {
            verified.insert(token, &live);
        }
        for n in 0..2 * VERIFIED_CACHE_ENTRIES {
            if n % 64 == 0 {
                for token in &in_use {
                    assert!(verified.get(token, 2, 0, 0).is_some(), "{token} forgotten after {n} one-off tokens");
                }
            }
            verified.insert(&format!("once-{n}"), &live);
        }
        let remembered = in_use.iter().filter(|token| verified.get(token, 2, 0, 0).is_some()).count();
        assert_eq!(remembered, in_use.len());
        assert!(verified.len() <= VERIFIED_CACHE_ENTRIES);
    }

    #[tokio::test]
    async fn a_token_before_its_nbf_is_not_yet_valid() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        let nbf = jsonwebtoken::get_current_timestamp() + 120;
        let verified = verifier.verify(&token_with(serde_json::json!({ "nbf": nbf }))).await;
        assert_eq!(verified, Err(TokenError::NotYetValid));
    }

    #[tokio::test]
    async fn a_claim_of_the_wrong_type_is_malformed_not_an_issuer_or_audience_mismatch() {
        let verifier = TokenVerifier::with_secret(SECRET, settings()).unwrap();
        // `nbf` is checked by the library alone, which says InvalidClaimFormat("nbf").
        let verified = verifier.verify(&token_with(serde_json::json!({"nbf": "soon"}))).await;
        assert_eq!(verified, Err(TokenError::Malformed));
    }
}
