//! The pages: static files compiled into the binary from `dashboards/web/`,
//! so the binary is the whole deployment. They hold no data; every figure
//! comes from `/api/` with the caller's token.
//!
//! Headers: a strict Content-Security-Policy (scripts, styles, images and
//! API calls from this origin only, no inline script, no framing), `nosniff`,
//! and `no-cache` (revalidate each load: a new binary serves new pages at
//! once, and the files are small).

use axum::{
    extract::Path,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// `(path, content type, bytes)` of every file served.
pub const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.LICENSE"),
    ),
];

/// `default-src 'self'` and nothing inline. `style-src` allows only this
/// origin too: uPlot sizes its canvases through the CSSOM, which CSP does
/// not restrict.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// The security headers every answer carries (pages and API alike).
pub fn security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn file(path: &str) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => {
            let mut resp = (StatusCode::OK, *bytes).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        None => ApiError::NotFound(format!("no page /{path}")).into_response(),
    }
}

pub async fn index() -> Response {
    file("index.html")
}

pub async fn app_js() -> Response {
    file("app.js")
}

pub async fn style_css() -> Response {
    file("style.css")
}

pub async fn vendor(Path(name): Path<String>) -> Response {
    file(&format!("vendor/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_files_with_their_types() {
        let r = app_js().await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let css = vendor(Path("uPlot.min.css".into())).await;
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        // Only the listed files: no path walks out of the folder.
        let r = vendor(Path("../../Cargo.toml".into())).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn csp_forbids_inline_script() {
        assert!(CSP.starts_with("default-src 'self'"));
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
    }
}
