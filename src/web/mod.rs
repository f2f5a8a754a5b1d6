//! The web app, served by the `docspot` binary itself: the patient booking
//! page (`/`), the clinic wall display (`/display/{clinic_id}`) and the
//! provider screen (`/provider`), installable as a PWA.
//!
//! The pages are plain HTML, CSS and ES modules under `src/web/assets/`,
//! embedded into the binary with rust-embed (release builds; debug builds read
//! the folder, so editing a file needs no rebuild). No build step: `cargo run`
//! is all it takes. They talk only to the public REST API and the live
//! WebSocket, like any other client.
//!
//! Two small API additions live here because only the pages need them:
//! [`ics`] (an appointment as a calendar file) and [`stats`] (the provider
//! charts).

pub mod ics;
pub mod stats;

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};
use rust_embed::RustEmbed;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "src/web/assets/"]
struct Assets;

/// The page policy. Everything comes from this origin; no inline script or
/// style and no eval, so an injected string can never run. The API keeps its
/// own `default-src 'none'` (set for every other response in `startup`).
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; \
     frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

/// Registers the pages and their assets (before the API routes; none of
/// these paths overlap `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/index.html", web::get().to(index))
        .route("/display/{clinic_id}", web::get().to(display))
        .route("/provider", web::get().to(provider))
        .route("/manifest.webmanifest", web::get().to(manifest))
        .route("/sw.js", web::get().to(service_worker))
        .route("/assets/{file:.*}", web::get().to(asset));
}

async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "index.html")
}

async fn display(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "display.html")
}

async fn provider(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "provider.html")
}

async fn manifest(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "manifest.webmanifest")
}

async fn service_worker(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "sw.js")
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // Pages are reached by their own routes; the folder holds no secrets,
    // and rust-embed only knows the embedded files (no path traversal).
    serve(&req, &path)
}

/// A content type for the few kinds of file the app has.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Serves one embedded file with its content type, the page policy and an
/// ETag (its SHA-256). `no-cache` means "revalidate": a changed binary is
/// picked up at once, an unchanged file costs a 304.
fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(name)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no file {name:?}")))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ));
    if fresh {
        return Ok(res.finish());
    }
    Ok(res
        .insert_header((header::CONTENT_TYPE, content_type(name)))
        .body(file.data.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_content_type() {
        for name in Assets::iter() {
            assert_ne!(
                content_type(&name),
                "application/octet-stream",
                "{name} would be served as bytes"
            );
        }
    }

    #[test]
    fn the_pages_and_the_worker_are_embedded() {
        for name in [
            "index.html",
            "display.html",
            "provider.html",
            "manifest.webmanifest",
            "sw.js",
            "i18n.js",
        ] {
            assert!(Assets::get(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        // The CSP forbids them; a page that used one would silently break.
        for name in Assets::iter().filter(|n| n.ends_with(".html")) {
            let text = String::from_utf8(Assets::get(&name).unwrap().data.into_owned()).unwrap();
            for bad in ["<style", " style=", "onclick=", "onload=", "javascript:"] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
            for tag in text.split("<script").skip(1) {
                assert!(tag.contains("src="), "{name} has an inline <script>");
            }
        }
    }
}
