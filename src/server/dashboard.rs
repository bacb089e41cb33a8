//! The dashboard page on the gRPC port: `/` and its assets over HTTP/1.1,
//! its calls over gRPC-Web to the same services plain gRPC reaches. The
//! assets are built from `dashboard/` (TypeScript) into `dashboard/dist/`,
//! which is committed and embedded here, so building or running the server
//! needs no Node. Unknown paths get a 404 (gRPC callers an UNIMPLEMENTED),
//! not the empty gRPC answer a browser could not read.

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// One embedded file.
struct Asset {
    /// Where it is served.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page and its assets, as built by `dashboard/scripts/build.mjs`.
const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../dashboard/dist/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../dashboard/dist/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../dashboard/dist/app.css"),
    },
];

/// The page allows itself and nothing else: no inline script, no other
/// origin, no framing (clickjacking of the pause and cancel buttons).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// The page's routes, and the fallback for every path no route serves.
pub(super) fn routes(router: Router) -> Router {
    let mut router = router;
    for asset in &ASSETS {
        let (content_type, body) = (asset.content_type, asset.body);
        router = router.route(
            asset.path,
            get(move || async move { page_response(content_type, body) }),
        );
    }
    router.fallback(not_found)
}

fn page_response(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Assets change with the binary: revalidate rather than cache stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// 404 for a page, UNIMPLEMENTED for a gRPC or gRPC-Web call (what a gRPC
/// server answers for a method it does not have).
async fn not_found(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!(
            "no method {} on this server",
            request.uri().path()
        ));
        return status.into_http::<axum::body::Body>().into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
