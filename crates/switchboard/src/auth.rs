//! Who a client is: a JWT from the handshake (`auth.token`, else the `token` query
//! parameter), verified with one configured key and algorithm, or, in the explicit
//! development mode, the `userId` query parameter.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// How identities are established.
#[derive(Clone)]
pub enum Auth {
    /// Tokens are verified with exactly this key and algorithm (no algorithm confusion).
    Jwt {
        key: Box<DecodingKey>,
        validation: Box<Validation>,
    },
    /// Development mode: no verification; the user id comes from `userId`.
    Development,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Jwt { validation, .. } => write!(f, "Jwt({:?})", validation.algorithms),
            Auth::Development => f.write_str("Development"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required: no token")]
    Missing,
    #[error("Token expired")]
    Expired,
    #[error("Invalid token")]
    Invalid,
    #[error("Token has no user id (sub, userId or id)")]
    NoUser,
}

impl Auth {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Auth {
        Auth::Jwt {
            key: Box::new(DecodingKey::from_secret(secret)),
            validation: Box::new(validation(Algorithm::HS256)),
        }
    }

    /// RS256 with a PEM public key.
    pub fn rs256(pem: &[u8]) -> Result<Auth, String> {
        let key =
            DecodingKey::from_rsa_pem(pem).map_err(|e| format!("invalid RSA public key: {e}"))?;
        Ok(Auth::Jwt {
            key: Box::new(key),
            validation: Box::new(validation(Algorithm::RS256)),
        })
    }

    /// The user id of a client, from its token (or `userId` in development mode).
    pub fn identify(
        &self,
        token: Option<&str>,
        query_user: Option<&str>,
    ) -> Result<String, AuthError> {
        match self {
            Auth::Development => match (query_user, token) {
                (Some(u), _) if !u.is_empty() => Ok(u.to_owned()),
                // Without `userId`, a development client is still someone: use its token
                // text (the platform's test pages send a fixed fake token).
                _ => Ok("anonymous".to_owned()),
            },
            Auth::Jwt { key, validation } => {
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                let data = jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| {
                    match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        _ => AuthError::Invalid,
                    }
                })?;
                user_id(&data.claims).ok_or(AuthError::NoUser)
            }
        }
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = true;
    v.leeway = 0;
    v.required_spec_claims = ["exp".to_owned()].into_iter().collect();
    v.validate_aud = false;
    v
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

    #[test]
    fn hs256_user_from_sub_user_id_or_id() {
        let auth = Auth::hs256(b"s3cret");
        let key = EncodingKey::from_secret(b"s3cret");
        for (claims, want) in [
            (serde_json::json!({"sub": "u1", "exp": exp_in(60)}), "u1"),
            (serde_json::json!({"userId": 42, "exp": exp_in(60)}), "42"),
            (serde_json::json!({"id": "7", "exp": exp_in(60)}), "7"),
        ] {
            assert_eq!(
                auth.identify(Some(&token(Algorithm::HS256, &key, claims)), None),
                Ok(want.to_owned())
            );
        }
    }

    #[test]
    fn refusals() {
        let auth = Auth::hs256(b"s3cret");
        let key = EncodingKey::from_secret(b"s3cret");
        assert_eq!(auth.identify(None, Some("1")), Err(AuthError::Missing));
        assert_eq!(
            auth.identify(Some("garbage"), None),
            Err(AuthError::Invalid)
        );
        let expired = token(
            Algorithm::HS256,
            &key,
            serde_json::json!({"sub": "u", "exp": exp_in(-10)}),
        );
        assert_eq!(auth.identify(Some(&expired), None), Err(AuthError::Expired));
        let other = token(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"other"),
            serde_json::json!({"sub": "u", "exp": exp_in(60)}),
        );
        assert_eq!(auth.identify(Some(&other), None), Err(AuthError::Invalid));
        let no_exp = token(Algorithm::HS256, &key, serde_json::json!({"sub": "u"}));
        assert_eq!(auth.identify(Some(&no_exp), None), Err(AuthError::Invalid));
        let no_user = token(
            Algorithm::HS256,
            &key,
            serde_json::json!({"exp": exp_in(60)}),
        );
        assert_eq!(auth.identify(Some(&no_user), None), Err(AuthError::NoUser));
        // Algorithm confusion: an HS384 token against the HS256 key is refused.
        let hs384 = token(
            Algorithm::HS384,
            &key,
            serde_json::json!({"sub": "u", "exp": exp_in(60)}),
        );
        assert_eq!(auth.identify(Some(&hs384), None), Err(AuthError::Invalid));
    }

    #[test]
    fn development_mode_takes_user_id_from_the_query() {
        let auth = Auth::Development;
        assert_eq!(
            auth.identify(Some("fake_jwt_token_for_testing"), Some("5")),
            Ok("5".to_owned())
        );
        assert_eq!(auth.identify(None, None), Ok("anonymous".to_owned()));
    }
}
