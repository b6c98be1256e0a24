//! Who a client is: a JWT from the handshake (`auth.token`, else the `token` query
//! parameter), verified with a configured key (HS256 secret, RS256 PEM) or a key from the
//! identity provider's JWKS document (RS256/ES256, chosen by `kid`), or, in development
//! mode, the `userId` query parameter.
//!
//! Owns: token verification (algorithm pinned per key, `exp`, `iss`, `aud`, leeway), the
//! JWKS cache and its refresh rules, and the room grants a token carries (`rooms` claim).
//! Never: what a grant allows (`transport::rooms`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::time::Instant;

/// How identities are established.
#[derive(Clone)]
pub enum Auth {
    /// Tokens are verified (see [`Verifier`]).
    Jwt(Arc<Verifier>),
    /// Development mode: no verification; the user id comes from `userId`.
    Development,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Jwt(v) => match &v.keys {
                Keys::Static { alg, .. } => write!(f, "Jwt({alg:?})"),
                Keys::Jwks(j) => write!(f, "Jwt(jwks {})", j.url),
            },
            Auth::Development => f.write_str("Development"),
        }
    }
}

/// Who a verified client is, and the rooms its token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`, else `userId`, else `id`.
    pub user: String,
    /// Room patterns of the token's `rooms` claim (`event_*`, `chat:team-1`), `None` when
    /// the token has no such claim (or in development mode).
    pub rooms: Option<Arc<[String]>>,
}

/// Why a client's identity was refused. The `Display` text is what the client sees; the
/// source (when there is one) is for the log only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was sent.
    #[error("Authentication required: no token")]
    Missing,
    /// The token's `exp` (plus the leeway) has passed.
    #[error("Token expired")]
    Expired,
    /// Bad signature, wrong algorithm (`none` included), malformed token, or a claim
    /// (`iss`, `aud`, `nbf`) that does not match.
    #[error("Invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The token names a key (`kid`) the identity provider's key set does not have.
    #[error("Invalid token: unknown signing key")]
    UnknownKey {
        /// The `kid` of the token (empty when it had none).
        kid: String,
    },
    /// The key set could not be fetched, or is older than allowed and could not be
    /// refreshed: no token can be verified.
    #[error("Signing keys unavailable: try again later")]
    KeysUnavailable(#[source] JwksError),
    /// The verified token names no user.
    #[error("Token has no user id (sub, userId or id)")]
    NoUser,
}

impl AuthError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid",
            AuthError::UnknownKey { .. } => "unknown-key",
            AuthError::KeysUnavailable(_) => "keys-unavailable",
            AuthError::NoUser => "no-user",
        }
    }
}

/// Why a key could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The configured path.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The PEM is not an RSA public key.
    #[error("invalid RSA public key in {path}")]
    Rsa {
        /// The configured path.
        path: String,
        /// What the parser said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Why the JWKS document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Connecting, TLS, or the HTTP exchange failed.
    #[error("fetching {url} failed")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a status other than 200.
    #[error("{url} answered {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// No answer within the timeout.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout {
        /// The JWKS URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The body is not a JWKS document.
    #[error("{url} is not a JWKS document")]
    Parse {
        /// The JWKS URL.
        url: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The last refresh is too recent to try again (the refresh rate limit).
    #[error("key set is stale and the last refresh failed less than {0:?} ago")]
    RateLimited(Duration),
}

/// Token checks besides the signature.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Accepted `iss` values; empty: not checked.
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one must match); empty: not checked.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// JWKS settings.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// `http://` or `https://` URL of the key set.
    pub url: String,
    /// A fetched key set is trusted this long; after it, it is fetched again before use
    /// and, if that fails, tokens are refused (a removed key must not live forever).
    pub max_age: Duration,
    /// At most one fetch per this interval (unknown `kid`s and failures never hammer the
    /// identity provider).
    pub min_refresh: Duration,
    /// Time limit of one fetch.
    pub timeout: Duration,
}

/// Verifies tokens: signature with a pinned algorithm, then the claims.
pub struct Verifier {
    keys: Keys,
    claims: Claims,
}

enum Keys {
    Static {
        key: Box<DecodingKey>,
        alg: Algorithm,
    },
    Jwks(Jwks),
}

impl Auth {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], claims: Claims) -> Auth {
        Auth::Jwt(Arc::new(Verifier {
            keys: Keys::Static {
                key: Box::new(DecodingKey::from_secret(secret)),
                alg: Algorithm::HS256,
            },
            claims,
        }))
    }

    /// RS256 with a PEM public key.
    pub fn rs256(pem: &[u8], claims: Claims) -> Result<Auth, jsonwebtoken::errors::Error> {
        let key = DecodingKey::from_rsa_pem(pem)?;
        Ok(Auth::Jwt(Arc::new(Verifier {
            keys: Keys::Static {
                key: Box::new(key),
                alg: Algorithm::RS256,
            },
            claims,
        })))
    }

    /// RS256 with the PEM public key in `path`.
    pub fn rs256_file(path: &str, claims: Claims) -> Result<Auth, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Auth::rs256(&pem, claims).map_err(|source| KeyError::Rsa {
            path: path.to_owned(),
            source,
        })
    }

    /// Keys from a JWKS document (RS256 and ES256 keys, chosen by the token's `kid`).
    /// Nothing is fetched until the first token arrives.
    pub fn jwks(config: JwksConfig, claims: Claims) -> Auth {
        Auth::Jwt(Arc::new(Verifier {
            keys: Keys::Jwks(Jwks::new(config)),
            claims,
        }))
    }

    /// The identity of a client, from its token (or `userId` in development mode).
    pub async fn identify(
        &self,
        token: Option<&str>,
        query_user: Option<&str>,
    ) -> Result<Identity, AuthError> {
        match self {
            Auth::Development => Ok(Identity {
                user: match query_user {
                    Some(u) if !u.is_empty() => u.to_owned(),
                    _ => "anonymous".to_owned(),
                },
                rooms: None,
            }),
            Auth::Jwt(v) => {
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                v.verify(token).await
            }
        }
    }
}

impl Verifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = match &self.keys {
            Keys::Static { key, alg } => decode(token, key, *alg, &self.claims)?,
            Keys::Jwks(jwks) => {
                // `alg: none` and unknown algorithms fail here, before any key lookup.
                let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
                let kid = header.kid.unwrap_or_default();
                let key = jwks.key(&kid).await?;
                if key.alg != header.alg {
                    return Err(AuthError::Invalid(
                        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
                    ));
                }
                decode(token, &key.key, key.alg, &self.claims)?
            }
        };
        let user = user_id(&claims).ok_or(AuthError::NoUser)?;
        Ok(Identity {
            user,
            rooms: room_grants(&claims),
        })
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    claims: &Claims,
) -> Result<Value, AuthError> {
    let mut v = Validation::new(alg);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = claims.leeway_secs;
    let mut required = vec!["exp"];
    if claims.issuer.is_empty() {
        v.iss = None;
    } else {
        v.set_issuer(&claims.issuer);
        required.push("iss");
    }
    if claims.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&claims.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    jsonwebtoken::decode::<Value>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e),
        })
}

/// `sub`, else `userId`, else `id`; strings or numbers.
fn user_id(claims: &Value) -> Option<String> {
    ["sub", "userId", "id"]
        .iter()
        .find_map(|k| match claims.get(*k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// The `rooms` claim: an array of patterns, or one space-separated string (as OAuth
/// scopes are written). Anything else grants nothing (an empty list).
fn room_grants(claims: &Value) -> Option<Arc<[String]>> {
    let patterns: Vec<String> = match claims.get("rooms")? {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Some(patterns.into())
}

/// One key of the set.
struct SetKey {
    key: DecodingKey,
    alg: Algorithm,
}

struct KeySet {
    keys: HashMap<String, Arc<SetKey>>,
    fetched: Instant,
}

/// The JWKS cache: keys by `kid`, fetched on first use, when older than `max_age`, and
/// when a token names an unknown `kid`, at most once per `min_refresh`.
struct Jwks {
    url: String,
    config: JwksConfig,
    set: parking_lot::RwLock<Option<Arc<KeySet>>>,
    /// One fetch at a time; holds the time of the last attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    fn new(config: JwksConfig) -> Jwks {
        Jwks {
            url: config.url.clone(),
            config,
            set: parking_lot::RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    fn fresh(&self, set: &KeySet) -> bool {
        set.fetched.elapsed() < self.config.max_age
    }

    async fn key(&self, kid: &str) -> Result<Arc<SetKey>, AuthError> {
        let current = self.set.read().clone();
        if let Some(set) = &current
            && self.fresh(set)
            && let Some(k) = set.keys.get(kid)
        {
            return Ok(k.clone());
        }
        // Missing, stale, or an unknown kid: refresh (one fetch at a time, rate limited).
        let set = self.refresh(current.as_ref()).await?;
        set.keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::UnknownKey {
                kid: kid.to_owned(),
            })
    }

    /// A key set fetched after `seen` (or `seen` itself when the rate limit forbids a
    /// fetch and it is still fresh).
    async fn refresh(&self, seen: Option<&Arc<KeySet>>) -> Result<Arc<KeySet>, AuthError> {
        let mut last = self.fetching.lock().await;
        // Someone else fetched while we waited.
        if let Some(now) = self.set.read().clone()
            && seen.is_none_or(|s| !Arc::ptr_eq(s, &now))
            && self.fresh(&now)
        {
            return Ok(now);
        }
        if let Some(at) = *last
            && at.elapsed() < self.config.min_refresh
        {
            return match seen {
                Some(s) if self.fresh(s) => Ok(s.clone()),
                _ => Err(AuthError::KeysUnavailable(JwksError::RateLimited(
                    self.config.min_refresh,
                ))),
            };
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let set = Arc::new(set);
                *self.set.write() = Some(set.clone());
                tracing::info!(url = %self.url, keys = set.keys.len(), "JWKS key set fetched");
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, cause = ?std::error::Error::source(&e), "JWKS fetch failed");
                match seen {
                    // A fresh set stays in use; only the unknown kid is refused.
                    Some(s) if self.fresh(s) => Ok(s.clone()),
                    _ => Err(AuthError::KeysUnavailable(e)),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let body = tokio::time::timeout(self.config.timeout, http_get(&self.url))
            .await
            .map_err(|_| JwksError::Timeout {
                url: self.url.clone(),
                timeout: self.config.timeout,
            })??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|source| JwksError::Parse {
            url: self.url.clone(),
            source,
        })?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // The algorithm is pinned per key: from `alg`, else from the key type.
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, Arc::new(SetKey { key, alg }));
            }
        }
        Ok(KeySet {
            keys,
            fetched: Instant::now(),
        })
    }
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// GET `url` (`http://` or `https://`, verified with the system's CA certificates); the body of a
/// 200 answer.
async fn http_get(url: &str) -> Result<bytes::Bytes, JwksError> {
    use http_body_util::BodyExt;
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| JwksError::Fetch {
        url: url.to_owned(),
        source,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(Box::new(e)))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| fail(Box::new(e)))?;
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let req = hyper::Request::get(path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| fail(Box::new(e)))?;
    let res = if https {
        let tls = crate::tls::client_connector()
            .connect(
                rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| fail(Box::new(e)))?,
                tcp,
            )
            .await
            .map_err(|e| fail(Box::new(e)))?;
        send(hyper_util::rt::TokioIo::new(tls), req)
            .await
            .map_err(fail)?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req)
            .await
            .map_err(fail)?
    };
    if res.status() != hyper::StatusCode::OK {
        return Err(JwksError::Status {
            url: url.to_owned(),
            status: res.status().as_u16(),
        });
    }
    let body = http_body_util::Limited::new(res.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(fail)?;
    Ok(body.to_bytes())
}

async fn send<I>(
    io: I,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn token(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
        encode(&Header::new(alg), &claims, key).expect("encode")
    }

    fn exp_in(secs: i64) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + secs
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn user(r: Result<Identity, AuthError>) -> Result<String, &'static str> {
        r.map(|i| i.user).map_err(|e| e.kind())
    }

    #[tokio::test]
    async fn hs256_user_from_sub_user_id_or_id() {
        let auth = Auth::hs256(SECRET, Claims::default());
        let key = EncodingKey::from_secret(SECRET);
        for (claims, want) in [
            (serde_json::json!({"sub": "u1", "exp": exp_in(60)}), "u1"),
            (serde_json::json!({"userId": 42, "exp": exp_in(60)}), "42"),
            (serde_json::json!({"id": "7", "exp": exp_in(60)}), "7"),
        ] {
            let t = token(Algorithm::HS256, &key, claims);
            assert_eq!(user(auth.identify(Some(&t), None).await), Ok(want.into()));
        }
    }

    #[tokio::test]
    async fn refusals() {
        let auth = Auth::hs256(SECRET, Claims::default());
        let key = EncodingKey::from_secret(SECRET);
        let id = |t: String| {
            let auth = auth.clone();
            async move { user(auth.identify(Some(&t), None).await) }
        };
        assert_eq!(user(auth.identify(None, Some("1")).await), Err("missing"));
        assert_eq!(id("garbage".into()).await, Err("invalid"));
        let claims = |c: Value| token(Algorithm::HS256, &key, c);
        assert_eq!(
            id(claims(serde_json::json!({"sub": "u", "exp": exp_in(-10)}))).await,
            Err("expired")
        );
        let other = token(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another secret of thirty-two by."),
            serde_json::json!({"sub": "u", "exp": exp_in(60)}),
        );
        assert_eq!(id(other).await, Err("invalid"));
        assert_eq!(
            id(claims(serde_json::json!({"sub": "u"}))).await,
            Err("invalid")
        );
        assert_eq!(
            id(claims(serde_json::json!({"exp": exp_in(60)}))).await,
            Err("no-user")
        );
        // Algorithm confusion: an HS384 token against the HS256 key is refused.
        let hs384 = token(
            Algorithm::HS384,
            &key,
            serde_json::json!({"sub": "u", "exp": exp_in(60)}),
        );
        assert_eq!(id(hs384).await, Err("invalid"));
        // `alg: none`, unsigned.
        assert_eq!(id(unsigned("u", exp_in(60))).await, Err("invalid"));
    }

    /// A token with `alg: none` and no signature.
    pub(crate) fn unsigned(sub: &str, exp: i64) -> String {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(serde_json::json!({"sub": sub, "exp": exp}))
        )
    }

    #[tokio::test]
    async fn issuer_audience_and_leeway() {
        let auth = Auth::hs256(
            SECRET,
            Claims {
                issuer: vec!["https://id.example".into()],
                audience: vec!["switchboard".into()],
                leeway_secs: 30,
            },
        );
        let key = EncodingKey::from_secret(SECRET);
        let id = |c: Value| {
            let t = token(Algorithm::HS256, &key, c);
            let auth = auth.clone();
            async move { user(auth.identify(Some(&t), None).await) }
        };
        let iss = "https://id.example";
        assert_eq!(
            id(
                serde_json::json!({"sub": "u", "exp": exp_in(60), "iss": iss, "aud": "switchboard"})
            )
            .await,
            Ok("u".into())
        );
        // One of several audiences is enough.
        assert_eq!(
            id(serde_json::json!({"sub": "u", "exp": exp_in(60), "iss": iss, "aud": ["x", "switchboard"]}))
                .await,
            Ok("u".into())
        );
        // Within the leeway an expired token still passes; beyond it, it does not.
        assert_eq!(
            id(serde_json::json!({"sub": "u", "exp": exp_in(-10), "iss": iss, "aud": "switchboard"}))
                .await,
            Ok("u".into())
        );
        assert_eq!(
            id(serde_json::json!({"sub": "u", "exp": exp_in(-60), "iss": iss, "aud": "switchboard"}))
                .await,
            Err("expired")
        );
        for bad in [
            serde_json::json!({"sub": "u", "exp": exp_in(60), "iss": iss, "aud": "other"}),
            serde_json::json!({"sub": "u", "exp": exp_in(60), "iss": iss}),
            serde_json::json!({"sub": "u", "exp": exp_in(60), "iss": "https://evil", "aud": "switchboard"}),
            serde_json::json!({"sub": "u", "exp": exp_in(60), "aud": "switchboard"}),
        ] {
            assert_eq!(id(bad.clone()).await, Err("invalid"), "{bad}");
        }
    }

    #[tokio::test]
    async fn room_grants_from_the_rooms_claim() {
        let auth = Auth::hs256(SECRET, Claims::default());
        let key = EncodingKey::from_secret(SECRET);
        let grants = |c: Value| {
            let t = token(Algorithm::HS256, &key, c);
            let auth = auth.clone();
            async move {
                auth.identify(Some(&t), None)
                    .await
                    .expect("valid")
                    .rooms
                    .map(|r| r.to_vec())
            }
        };
        assert_eq!(
            grants(
                serde_json::json!({"sub": "u", "exp": exp_in(60), "rooms": ["event_*", "chat:a"]})
            )
            .await,
            Some(vec!["event_*".to_owned(), "chat:a".to_owned()])
        );
        assert_eq!(
            grants(serde_json::json!({"sub": "u", "exp": exp_in(60), "rooms": "event_1 chat:b"}))
                .await,
            Some(vec!["event_1".to_owned(), "chat:b".to_owned()])
        );
        assert_eq!(
            grants(serde_json::json!({"sub": "u", "exp": exp_in(60), "rooms": 5})).await,
            Some(vec![])
        );
        assert_eq!(
            grants(serde_json::json!({"sub": "u", "exp": exp_in(60)})).await,
            None
        );
    }

    #[tokio::test]
    async fn development_mode_takes_user_id_from_the_query() {
        let auth = Auth::Development;
        assert_eq!(
            user(
                auth.identify(Some("fake_jwt_token_for_testing"), Some("5"))
                    .await
            ),
            Ok("5".to_owned())
        );
        assert_eq!(
            user(auth.identify(None, None).await),
            Ok("anonymous".into())
        );
    }
}
