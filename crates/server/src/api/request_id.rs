//! Request ids: every request gets one (or keeps the one its client sent, if usable), every
//! log line written while serving it carries it, and the answer returns it in `X-Request-Id`
//! so a user's bug report can be matched to the server's log.

use axum::extract::Request;
use axum::http::HeaderValue;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Span;

/// The header, as tower-http's request-id layers use it.
pub const HEADER: &str = "x-request-id";

/// The longest client-sent id that is kept.
const MAX_LEN: usize = 128;

/// Makes a random id for a request that came without a usable one.
#[derive(Debug, Clone, Copy)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::secrets::random_id(20))
            .ok()
            .map(RequestId::new)
    }
}

/// Drops a client-sent id that is too long or has characters beyond letters, digits and
/// `-_.:`: it goes into every log line, where it must not forge fields or flood the log.
pub async fn drop_unusable(mut request: Request) -> Request {
    let usable = request.headers().get(HEADER).is_some_and(|id| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= MAX_LEN
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !usable {
        request.headers_mut().remove(HEADER);
    }
    request
}

/// The span every request is served in: its id, method and path.
pub fn span<B>(request: &axum::http::Request<B>) -> Span {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}
