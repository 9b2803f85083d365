//! Tokens for the authentication tests, minted by a real JWT library (`jsonwebtoken`), and a
//! JWKS served over real HTTP on loopback.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The HS256 secret of the tests' servers.
pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims for `sub` allowed `projects`, expiring in `ttl` seconds, with `extra` merged in.
pub fn claims(sub: &str, projects: &[&str], ttl: i64, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "projects": projects, "iat": now(), "exp": now().saturating_add_signed(ttl)});
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    claims
}

pub fn hs256(claims: &Value) -> String {
    hs256_with_secret(SECRET.as_bytes(), claims)
}

/// HS256 with another secret: a forgery, as far as the tests' servers are concerned.
pub fn hs256_with_secret(secret: &[u8], claims: &Value) -> String {
    sign(Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret).unwrap())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test key")
}

/// RS256 with `tests/fixtures/<kid>.pem`.
pub fn rs256(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    sign(header, claims, &EncodingKey::from_rsa_pem(&fixture(&format!("{kid}.pem"))).unwrap())
}

/// ES256 with `tests/fixtures/ec-p256.pem`.
pub fn es256(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-p256".to_owned());
    sign(header, claims, &EncodingKey::from_ec_pem(&fixture("ec-p256.pem")).unwrap())
}

/// The algorithm-confusion forgery: HS256 "signed" with an RSA key's public PEM as the secret,
/// naming that key's kid.
pub fn hs256_with_public_key(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    sign(header, claims, &EncodingKey::from_secret(&fixture(&format!("{kid}.pub.pem"))).unwrap())
}

fn sign(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// The public JWKs of these fixture keys, as a JWKS document.
pub fn jwks_of(kids: &[&str]) -> String {
    let keys: Vec<Value> =
        kids.iter().map(|kid| serde_json::from_slice(&fixture(&format!("{kid}.jwk.json"))).unwrap()).collect();
    json!({ "keys": keys }).to_string()
}

/// A JWKS endpoint on loopback whose document the test can change, counting its requests. A
/// held one answers nothing until [`JwksServer::release`]: a key fetch that is still pending.
pub struct JwksServer {
    pub url: String,
    document: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    held: tokio::sync::watch::Sender<bool>,
}

impl JwksServer {
    pub async fn start(document: String) -> Self {
        Self::start_with(document, false).await
    }

    /// A JWKS endpoint that holds every answer until [`JwksServer::release`].
    pub async fn start_held(document: String) -> Self {
        Self::start_with(document, true).await
    }

    pub fn release(&self) {
        self.held.send_replace(false);
    }

    async fn start_with(document: String, held: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let (document, requests) = (Arc::new(Mutex::new(document)), Arc::new(AtomicUsize::new(0)));
        let (served, counted) = (document.clone(), requests.clone());
        let (held, gate) = tokio::sync::watch::channel(held);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (served, counted, mut gate) = (served.clone(), counted.clone(), gate.clone());
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|held| !held).await;
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer { url, document, requests, held }
    }

    pub fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
