//! The console's static files, embedded at build time (no CDN): its stylesheet and scripts,
//! and htmx, xterm.js and xterm's fit add-on, vendored from npm (`relay/web/package.json` pins
//! the versions; `.ci/run` checks that the files in `relay/assets/vendor/` are those releases').

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx.min.js"),
    ),
    (
        "terminal.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/terminal.js"),
    ),
    (
        "xterm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/xterm.mjs"),
    ),
    (
        "xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/xterm.css"),
    ),
    (
        "addon-fit.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/addon-fit.mjs"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/favicon.svg"),
    ),
];

/// `GET /assets/{file}`: no login needed; cached for an hour.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            resp
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
