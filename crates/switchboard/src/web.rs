//! The pages: the ticket page at `/`, the chat at `/chat`, the live dashboard at
//! `/dashboard`, their assets
//! under `/assets/`, and `GET /api/session-info` (how a visitor signs in).
//!
//! Owns: the files of `web/` (embedded at build time, so `cargo run` serves them with no
//! build step and no files beside the binary), their content types, and the headers every
//! page carries (`Cache-Control: no-cache`, a strict `Content-Security-Policy` that allows
//! scripts and styles from this server only). Never: data or state. The pages are clients
//! like any other: they use `/ws`, `/api/events`, `/dashboard/stream` and `/stats`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::DevModeReason;

/// Scripts and styles from this server only (no inline code, no third-party origins);
/// connections to this server's HTTP, WebSocket and SSE endpoints only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../../web/", $name)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const DASHBOARD: Asset = asset!("dashboard.html", "text/html; charset=utf-8");
const CHAT: Asset = asset!("chat.html", "text/html; charset=utf-8");

/// What `/assets/{name}` serves; anything else is 404.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("chat.js", "text/javascript; charset=utf-8"),
    asset!("chat.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The pages' routes. `dev_mode` is [`crate::Config::dev_mode_reason`]: only in development
/// mode does the ticket page offer its demo sign-in (a display name used as `?userId=`),
/// and it says which case applies.
pub fn routes(dev_mode: Option<DevModeReason>) -> Router {
    if let Some(why) = dev_mode {
        tracing::warn!(
            reason = why.as_str(),
            "pages: / offers a DEMO SIGN-IN (any display name, no password) because {}",
            why.explain()
        );
    }
    Router::new()
        .route("/", get(|| async { serve(&INDEX) }))
        .route("/dashboard", get(|| async { serve(&DASHBOARD) }))
        .route("/chat", get(|| async { serve(&CHAT) }))
        .route("/assets/{name}", get(asset))
        .route("/api/session-info", get(session_info))
        .with_state(dev_mode)
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found",
        )
            .into_response(),
    }
}

/// `{"devMode", "devModeReason", "auth"}`: whether the page may sign in with a bare
/// display name, and why. Nothing secret: the same facts are in the server's log at start-up.
async fn session_info(State(dev_mode): State<Option<DevModeReason>>) -> Response {
    let body = serde_json::json!({
        "devMode": dev_mode.is_some(),
        "devModeReason": dev_mode.map(DevModeReason::as_str),
        "auth": if dev_mode.is_some() { "development" } else { "jwt" },
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let res = router.oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    #[tokio::test]
    async fn pages_and_assets_have_their_types_and_the_strict_policy() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/dashboard", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/dashboard.js", "text/javascript; charset=utf-8"),
            ("/assets/common.js", "text/javascript; charset=utf-8"),
            ("/assets/style.css", "text/css; charset=utf-8"),
            ("/assets/icon.svg", "image/svg+xml"),
        ] {
            let (status, headers, body) = get(routes(None), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert!(!body.is_empty(), "{path}");
        }
        assert!(!CSP.contains("unsafe"), "no unsafe-inline or unsafe-eval");
    }

    #[tokio::test]
    async fn pages_load_no_inline_or_foreign_code() {
        for page in [&INDEX, &DASHBOARD] {
            let html = std::str::from_utf8(page.body).expect("utf-8");
            // Every <script> has a same-origin src and no body; no inline handlers/styles.
            for tag in html.split("<script").skip(1) {
                assert!(tag.contains("src=\"/assets/"), "{}: {tag}", page.name);
                assert!(
                    tag.contains("></script>"),
                    "{}: inline script body",
                    page.name
                );
            }
            for forbidden in [" onclick=", " onload=", " style=", "http://", "https://"] {
                assert!(!html.contains(forbidden), "{}: {forbidden}", page.name);
            }
        }
    }

    #[tokio::test]
    async fn unknown_assets_are_404() {
        for path in [
            "/assets/nope.js",
            "/assets/..%2Fweb.rs",
            "/assets/index.html",
            "/assets/",
        ] {
            let (status, _, _) = get(routes(None), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn session_info_tells_the_auth_mode_only() {
        let (status, headers, body) = get(
            routes(Some(DevModeReason::LoopbackWithoutKey)),
            "/api/session-info",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"devMode": true, "devModeReason": "loopback-without-key",
                "auth": "development"})
        );
        let (_, _, body) = get(routes(Some(DevModeReason::Explicit)), "/api/session-info").await;
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["devModeReason"], "explicit");
        let (_, _, body) = get(routes(None), "/api/session-info").await;
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"devMode": false, "devModeReason": null, "auth": "jwt"})
        );
    }

    #[tokio::test]
    async fn the_built_server_serves_the_pages_and_its_real_auth_mode() {
        for (key, dev) in [("", true), ("s3cret-s3cret-s3cret-s3cret-s3cr", false)] {
            let config = crate::Config::load(&crate::config::Sources {
                overrides: vec![
                    ("data_dir".into(), "memory".into()),
                    ("jwt_secret".into(), key.into()),
                ],
                ..Default::default()
            })
            .expect("config");
            let app = crate::build(&config).expect("build");
            let (status, _, _) = get(app.router.clone(), "/").await;
            assert_eq!(status, StatusCode::OK);
            let (status, _, _) = get(app.router.clone(), "/dashboard").await;
            assert_eq!(status, StatusCode::OK);
            let (_, _, body) = get(app.router.clone(), "/api/session-info").await;
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["devMode"], dev, "jwt_secret {key:?}");
            app.close_sessions();
        }
    }
}
