//! Connection tokens for the `connect` scenario: each connection presents a token on its URL
//! (`?token=`), signed as the server verifies them (HS256 with its JWT_SECRET, or RS256 with the
//! private half of a key in its JWKS), so the cost of checking a token per connect is measured.
//! Tokens are signed before the ramp starts: the load generator's own signing (a millisecond per
//! RSA signature) does not slow the ramp it measures.

use std::path::PathBuf;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// Each connection presents its own HS256 token signed with this secret (the server's JWT_SECRET).
    #[arg(long)]
    pub token_secret: Option<String>,
    /// Each connection presents its own RS256 token signed with this PKCS#8 PEM private key (its
    /// public half in the server's JWKS, under --token-kid).
    #[arg(long)]
    pub token_rsa_key: Option<PathBuf>,
    /// The `kid` of --token-rsa-key in the server's JWKS.
    #[arg(long, default_value = "loadtest")]
    pub token_kid: String,
    /// Project patterns each token carries: the connection's project, then `other-N-*` fillers.
    #[arg(long, default_value_t = 1)]
    pub token_patterns: usize,
    /// Every connection presents the same token (a reconnect storm re-presenting its tokens).
    #[arg(long)]
    pub token_shared: bool,
}

impl TokenArgs {
    /// The same options, for a worker process's command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(secret) = &self.token_secret {
            args.extend(["--token-secret".to_owned(), secret.clone()]);
        }
        if let Some(key) = &self.token_rsa_key {
            args.extend(["--token-rsa-key".to_owned(), key.display().to_string()]);
        }
        args.extend(["--token-kid".to_owned(), self.token_kid.clone()]);
        args.extend(["--token-patterns".to_owned(), self.token_patterns.to_string()]);
        if self.token_shared {
            args.push("--token-shared".to_owned());
        }
        args
    }

    /// What the tokens are signed with; None when connections are anonymous.
    pub fn signer(&self) -> anyhow::Result<Option<Signer>> {
        let (header, key) = match (&self.token_secret, &self.token_rsa_key) {
            (Some(secret), None) => {
                (Header::new(Algorithm::HS256), EncodingKey::from_secret(secret.as_bytes()).context("--token-secret")?)
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| format!("--token-rsa-key {}", path.display()))?;
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(self.token_kid.clone());
                (header, EncodingKey::from_rsa_pem(&pem).context("--token-rsa-key: not an RSA PEM key")?)
            }
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => anyhow::bail!("--token-secret or --token-rsa-key, not both"),
        };
        Ok(Some(Signer { header, key, patterns: self.token_patterns.max(1), shared: self.token_shared }))
    }
}

pub struct Signer {
    header: Header,
    key: EncodingKey,
    patterns: usize,
    shared: bool,
}

impl Signer {
    /// The token of connection `index`, allowed `project` (or, shared, every project of the run).
    pub fn token(&self, index: usize, project: &str, run_id: &str) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let (sub, own) = if self.shared {
            ("lt-shared".to_owned(), format!("lt-{run_id}-*"))
        } else {
            (format!("lt-{index}"), project.to_owned())
        };
        let mut projects = vec![own];
        projects.extend((1..self.patterns).map(|n| format!("other-{n}-*")));
        let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600, "projects": projects});
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("signing a token")
    }
}
