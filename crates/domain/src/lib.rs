//! buildstate's domain: state codes, statuses, the transition and retry rules, gating and the
//! wire types, exactly as `docs/rules.md` states them for users.
//!
//! Nothing here does I/O or reads a clock: the server, the CLI, the Concourse resource and the
//! GitHub Action all call these functions, so none of them re-implements a rule.

pub mod fields;
pub mod gate;
pub mod limits;
pub mod notes;
pub mod outputs;
pub mod policy;
pub mod reports;
pub mod resumes;
pub mod retries;
pub mod rules;
pub mod state;
pub mod status;
pub mod tokens;
pub mod wire;

pub use fields::{
    BuildId, BuildKey, Email, ImageType, InvalidField, Labels, Platform, TokenId, Username,
};
pub use gate::{gate, Gate, GateDecision};
pub use outputs::{InvalidOutputs, Outputs, StageOutput, StageOutputs};
pub use policy::{BuildRetryPolicy, InvalidPolicy, StageRange, StageRetry, StageRule};
pub use retries::{record_retry_due, retry_due, DueRetry};
pub use rules::{
    apply_operator_action, apply_operator_action_under, apply_report, apply_report_under,
    heartbeat_interval, release_lease, renew_lease, Event, Lease, OperatorAction, Progress,
    Refusal, Report, RetryPolicy, Transition, DEFAULT_LEASE_DURATION, MIN_LEASE_DURATION,
};
pub use state::{InvalidStateCode, Phase, StateCode};
pub use status::{BuildStatus, EventKind, ReportStatus, Role, Scope, UnknownVariant};
