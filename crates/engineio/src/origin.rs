//! Which browser origins may open a WebSocket or an event stream: the defence against
//! cross-site WebSocket hijacking (a WebSocket upgrade is not subject to CORS, so a page
//! on any site could otherwise open one with the visitor's cookies).
//!
//! Pure: a decision from the request headers. The routing layer calls it before any
//! other work and answers 403.

use http::{HeaderMap, header};

/// The origins allowed to open WebSockets and event streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`["*"]`).
    Any,
    /// Exact origins (`https://app.example`, compared without case); same-origin pages
    /// (the `Origin`'s host is the request's `Host`) are always allowed.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// `["*"]` (or any list containing `*`) is [`AllowedOrigins::Any`]; otherwise the
    /// listed origins (`self` entries only say "same origin", which is always allowed).
    pub fn from_list(list: &[String]) -> AllowedOrigins {
        if list.iter().any(|o| o == "*") {
            return AllowedOrigins::Any;
        }
        AllowedOrigins::List(
            list.iter()
                .filter(|o| *o != "self")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether a request with these headers may proceed. A request without `Origin` is
    /// not from a browser page (browsers always send it on WebSocket upgrades and
    /// cross-origin requests) and is allowed; `Origin: null` (sandboxed frames, files)
    /// is allowed only by [`AllowedOrigins::Any`].
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let list = match self {
            AllowedOrigins::Any => return true,
            AllowedOrigins::List(list) => list,
        };
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().trim_end_matches('/');
        if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        // Same origin: the page was served by this host (scheme not compared: the Host
        // header does not carry it, and a page of the same host is not cross-site).
        let authority = origin.split_once("://").map(|(_, a)| a);
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        matches!((authority, host), (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins() {
        let list = AllowedOrigins::from_list(&["https://app.example/".into()]);
        let host = "rt.example:8880";
        assert!(
            list.allows(&headers(None, host)),
            "no Origin: not a browser"
        );
        assert!(list.allows(&headers(Some("https://app.example"), host)));
        assert!(list.allows(&headers(Some("HTTPS://APP.example"), host)));
        assert!(
            list.allows(&headers(Some("https://rt.example:8880"), host)),
            "same origin"
        );
        for bad in [
            "https://evil.example",
            "https://app.example.evil",
            "http://rt.example",
            "null",
            "",
        ] {
            assert!(!list.allows(&headers(Some(bad), host)), "{bad}");
        }
        let none = AllowedOrigins::from_list(&["self".into()]);
        assert!(none.allows(&headers(Some("http://rt.example:8880"), host)));
        assert!(!none.allows(&headers(Some("https://app.example"), host)));
        let any = AllowedOrigins::from_list(&["*".into()]);
        assert!(any.allows(&headers(Some("null"), host)));
        assert!(any.allows(&headers(Some("https://evil.example"), host)));
    }
}
