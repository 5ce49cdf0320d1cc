//! Checks on a request's head that come before any handler reads it: what the server cannot
//! serve is refused at once, from the head alone, with the JSON error envelope.
//!
//! - HTTP/1.1 without `Host` is malformed (RFC 9112, 3.2): 400 naming the header;
//! - a `Content-Encoding` other than `identity`: the server does not decompress bodies, so it
//!   would read a compressed body as garbage: 415 naming the encoding;
//! - a `Content-Length` over the body limit: 413 before the body is read — in particular
//!   before hyper answers `Expect: 100-continue` with `100 Continue`, inviting the client to
//!   send what would be refused anyway.

use axum::extract::Request;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HOST};
use axum::http::Version;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;

/// Refuses a request whose head alone says it cannot be served; passes the others on.
pub async fn refuse_unservable(max_body_bytes: usize, request: Request, next: Next) -> Response {
    match refusal(max_body_bytes, &request) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

fn refusal(max_body_bytes: usize, request: &Request) -> Option<ApiError> {
    let headers = request.headers();
    if request.version() == Version::HTTP_11 && !headers.contains_key(HOST) {
        return Some(ApiError::missing_host());
    }
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let text = encoding.to_str().unwrap_or("(not text)");
        if !text.trim().eq_ignore_ascii_case("identity") {
            return Some(ApiError::unsupported_content_encoding(text));
        }
    }
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.trim().parse::<u64>().ok());
    match announced {
        Some(length) if length > max_body_bytes as u64 => {
            Some(ApiError::body_too_large(max_body_bytes))
        }
        _ => None,
    }
}
