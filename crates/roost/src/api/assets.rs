//! The dashboard's files, embedded in the binary and gzip-compressed once at start. App files
//! are revalidated by ETag; vendored libraries carry their version in the name and are cached
//! for a year.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

struct Asset {
    content_type: &'static str,
    plain: &'static [u8],
    gzip: Vec<u8>,
    etag: String,
    immutable: bool,
}

/// Every embedded file by its path under `/static/` (and `index.html` for `/`).
#[derive(Clone)]
pub struct Assets(Arc<HashMap<&'static str, Asset>>);

const FILES: &[(&str, &str, &[u8], bool)] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../assets/index.html"), false),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/app.js"), false),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/app.css"), false),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/favicon.svg"), false),
    (
        "vendor/uPlot-1.6.31.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot-1.6.31.iife.min.js"),
        true,
    ),
    ("vendor/uPlot-1.6.31.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/vendor/uPlot-1.6.31.min.css"), true),
    ("vendor/mqtt-5.16.0.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/mqtt-5.16.0.min.js"), true),
    ("vendor/LICENSE-uPlot.txt", "text/plain; charset=utf-8", include_bytes!("../../assets/vendor/LICENSE-uPlot.txt"), true),
    ("vendor/LICENSE-mqtt.js.md", "text/plain; charset=utf-8", include_bytes!("../../assets/vendor/LICENSE-mqtt.js.md"), true),
];

impl Assets {
    pub fn load() -> Self {
        let map = FILES
            .iter()
            .map(|&(path, content_type, plain, immutable)| {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                let gzip = encoder.write_all(plain).and_then(|()| encoder.finish()).unwrap_or_default();
                let etag = format!("\"{:016x}\"", crate::model::fnv1a(&[plain]));
                (path, Asset { content_type, plain, gzip, etag, immutable })
            })
            .collect();
        Self(Arc::new(map))
    }

    pub fn response(&self, path: &str, request: &HeaderMap) -> Response {
        let Some(asset) = self.0.get(path) else {
            return (StatusCode::NOT_FOUND, "no such file\n").into_response();
        };
        let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
        if request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == asset.etag.as_bytes()) {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, asset.etag.clone()), (header::CACHE_CONTROL, cache.into())]).into_response();
        }
        let gzip_ok = request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
            && !asset.gzip.is_empty();
        let mut response = if gzip_ok { asset.gzip.clone().into_response() } else { asset.plain.into_response() };
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
            headers.insert(header::ETAG, etag);
        }
        if gzip_ok {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    }
}

/// The dashboard's page may run only its own scripts and styles, fetch only from this server,
/// and not be framed: it has no inline script, so injected markup could not run even if some
/// value were ever written as HTML. WebSockets may go anywhere: the MQTT console connects to
/// the broker URL its user types. MQTT.js runs its keep-alive timer in a worker made from a
/// `blob:` URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; worker-src 'self' blob:; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn index(State(state): State<super::ApiState>, headers: HeaderMap) -> Response {
    let mut response = state.assets.response("index.html", &headers);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

pub async fn file(State(state): State<super::ApiState>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    state.assets.response(&path, &headers)
}
