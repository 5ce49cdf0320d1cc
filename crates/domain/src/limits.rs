//! The API's size limits — page sizes and text lengths — declared once, so the server that
//! enforces them, the client that pages with them and the CLI that checks flags against them
//! cannot disagree.

/// Longest report message, operator reason or description kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16 * 1024;
/// Longest build description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest report source (a CI run URL), in characters.
pub const MAX_SOURCE_CHARS: usize = 2048;
/// Longest token description, in characters.
pub const MAX_TOKEN_DESCRIPTION_CHARS: usize = 512;
/// The longest `Idempotency-Key` the server keeps, in bytes of visible ASCII.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The most failures a build may allow per stage (`max_retries`).
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// `GET /builds`: builds per page when `limit` is absent.
pub const BUILD_PAGE_DEFAULT: u32 = 50;
/// `GET /builds`: the largest `limit`.
pub const BUILD_PAGE_MAX: u32 = 500;
/// `GET /builds/{id}/history`: entries per page when `limit` is absent.
pub const HISTORY_PAGE_DEFAULT: u32 = 100;
/// `GET /builds/{id}/history`: the largest `limit`.
pub const HISTORY_PAGE_MAX: u32 = 1000;

/// Outputs one `completed` report may carry.
pub const MAX_OUTPUTS: usize = 32;
/// The longest output key, in characters (keys are environment-variable names).
pub const MAX_OUTPUT_KEY_CHARS: usize = 64;
/// The longest output value, in bytes of UTF-8.
pub const MAX_OUTPUT_VALUE_BYTES: usize = 1024;
/// The longest run identity (`run`, or `source` standing in for it) and report source.
pub const MAX_RUN_CHARS: usize = 2048;

/// The most rules a build's retry policy may have: one per stage from 0 to 100.
pub const MAX_POLICY_RULES: usize = 21;
/// The longest backoff base or cap a retry policy may set, in seconds: a week.
pub const MAX_BACKOFF_SECS: u64 = 7 * 24 * 3600;
