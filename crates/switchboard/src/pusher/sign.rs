//! Pusher's signatures: channel authorization, user sign-in, HTTP API requests and
//! webhooks, all hex HMAC-SHA256 with the app's secret. Checks are constant time
//! (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use md5::Digest;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// Hex HMAC-SHA256 of `message`.
pub(crate) fn sign(secret: &str, message: &str) -> String {
    let mut m = mac(secret);
    m.update(message.as_bytes());
    hex(&m.finalize().into_bytes())
}

/// Does `signature` (hex) sign `message`? Constant time in the signature's bytes.
pub(crate) fn verify(secret: &str, message: &str, signature: &str) -> bool {
    let Some(bytes) = unhex(signature) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(message.as_bytes());
    m.verify_slice(&bytes).is_ok()
}

/// Hex MD5 of a request body (`body_md5`).
pub(crate) fn md5_hex(body: &[u8]) -> String {
    hex(&md5::Md5::digest(body))
}

/// What a channel authorization signs: `socket_id:channel[:channel_data]`.
pub(crate) fn channel_message(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// What a user sign-in signs: `socket_id::user::user_data`.
pub(crate) fn user_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Why an `auth` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("Missing auth: expected \"<key>:<signature>\"")]
    Missing,
    #[error("Invalid key in auth: expected this app's key")]
    WrongKey,
    #[error("Invalid signature: expected the HMAC SHA256 hex digest of {0:?}")]
    BadSignature(String),
}

/// Checks an `auth` value (`key:hexsig`) against `message`.
pub(crate) fn check_auth(
    key: &str,
    secret: &str,
    auth: Option<&str>,
    message: String,
) -> Result<(), AuthError> {
    let auth = auth.filter(|a| !a.is_empty()).ok_or(AuthError::Missing)?;
    let (k, sig) = auth.split_once(':').ok_or(AuthError::Missing)?;
    if k != key {
        return Err(AuthError::WrongKey);
    }
    if verify(secret, &message, sig) {
        Ok(())
    } else {
        Err(AuthError::BadSignature(message))
    }
}

/// The string an API request's `auth_signature` signs: method, path, and the query
/// without `auth_signature`, keys lower-cased and sorted, values as decoded.
pub(crate) fn api_message(method: &str, path: &str, query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = query
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{method}\n{path}\n{}", q.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn reference_test_vector() {
        let message = channel_message("1234.1234", "private-foobar", None);
        assert_eq!(
            format!("{KEY}:{}", sign(SECRET, &message)),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth =
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert_eq!(check_auth(KEY, SECRET, Some(auth), message.clone()), Ok(()));
    }

    #[test]
    fn bad_auth_values_are_refused() {
        let message = || channel_message("1234.1234", "private-foobar", None);
        let good = sign(SECRET, &message());
        assert_eq!(
            check_auth(KEY, SECRET, None, message()),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_auth(KEY, SECRET, Some("nocolon"), message()),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_auth(KEY, SECRET, Some(&format!("otherkey:{good}")), message()),
            Err(AuthError::WrongKey)
        );
        let mut flipped = good.clone().into_bytes();
        flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for sig in [flipped.as_str(), "zz", "", &good[..10]] {
            assert!(matches!(
                check_auth(KEY, SECRET, Some(&format!("{KEY}:{sig}")), message()),
                Err(AuthError::BadSignature(_))
            ));
        }
        // Another socket's signature does not fit this socket.
        let other = channel_message("1234.1235", "private-foobar", None);
        assert!(check_auth(KEY, SECRET, Some(&format!("{KEY}:{good}")), other).is_err());
    }

    #[test]
    fn presence_and_user_messages() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        assert_eq!(
            channel_message("1234.1234", "presence-foobar", Some(data)),
            format!("1234.1234:presence-foobar:{data}")
        );
        assert_eq!(
            user_message("1.2", r#"{"id":"u"}"#),
            r#"1.2::user::{"id":"u"}"#
        );
    }

    #[test]
    fn api_signature_string() {
        // Pusher's REST documentation example.
        let query = [
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            ("auth_signature", "ignored"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let message = api_message("POST", "/apps/3/events", &query);
        assert_eq!(
            message,
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            sign(SECRET, &message),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        assert_eq!(
            md5_hex(br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#),
            "ec365a775a4cd0599faeb73354201b6f"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
