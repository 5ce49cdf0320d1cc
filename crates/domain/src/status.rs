//! Build statuses, report statuses and history event kinds, with their wire spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Names the enum spellings accepted by a `FromStr`, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}: expected one of {}", .expected.join(", "))]
pub struct UnknownVariant {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident as $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        what: $what,
                        value: text.to_owned(),
                        expected: &[$(concat!("`", $text, "`")),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Where a build is, together with its state code.
    BuildStatus as "build status" {
        /// `state` is the next stage to run.
        Running => "running",
        /// Someone reported they are working on `state`.
        InProgress => "in_progress",
        /// `state` failed and will be retried, not before `next_attempt_at`.
        Failed => "failed",
        /// `state` failed more than `max_retries` times: a person must retry, reset or cancel.
        Blocked => "blocked",
        /// 100 completed: the image is published.
        Completed => "completed",
        /// An operator gave the build up.
        Cancelled => "cancelled",
    }
}

impl BuildStatus {
    /// Completed and cancelled builds take no more reports; a key may start a new build.
    pub fn is_finished(self) -> bool {
        matches!(self, BuildStatus::Completed | BuildStatus::Cancelled)
    }

    /// Completed, cancelled and blocked builds do not move on without a person: whoever
    /// follows one can stop.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            BuildStatus::Completed | BuildStatus::Cancelled | BuildStatus::Blocked
        )
    }
}

wire_enum! {
    /// What a client reports about a stage.
    ReportStatus as "report status" {
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
    }
}

wire_enum! {
    /// What one history entry records.
    EventKind as "event kind" {
        /// The build was created.
        Started => "started",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
        /// A jump past this stage: the pipeline does not use it.
        Skipped => "skipped",
        /// An operator cleared the failures of a blocked or failed stage.
        Retried => "retried",
        /// An operator moved the build back to an earlier stage.
        Reset => "reset",
        /// An operator gave the build up.
        Cancelled => "cancelled",
        /// A run's lease on this stage expired and another run took the stage over.
        TakenOver => "taken_over",
        /// The failed stage's backoff ended and it has retries left: its next attempt is due
        /// now. Recorded by the server, once per failure; front ends start the retry on it.
        RetryDue => "retry_due",
        /// A failure at a stage whose retry policy has `restart_from` moved the build back to
        /// that earlier stage: the stages from it to the failed one run again, and their
        /// outputs are superseded. The entry's state is the stage the build moved back to; its
        /// message names the range and why.
        Reopened => "reopened",
    }
}

wire_enum! {
    /// What a token may do; each scope includes the ones before it.
    Scope as "token scope" {
        /// Read builds, history, gates and reports.
        Read => "read",
        /// Also start builds and report transitions.
        Write => "write",
        /// Also manage users and tokens, and retry, reset or cancel builds.
        Admin => "admin",
    }
}

impl Scope {
    /// Whether a token of this scope may do what `needed` requires.
    pub fn allows(self, needed: Scope) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Scope::Read => 0,
            Scope::Write => 1,
            Scope::Admin => 2,
        }
    }
}

wire_enum! {
    /// A user's role: which token scopes they may hold.
    Role as "role" {
        /// May hold `read` and `write` tokens.
        Member => "member",
        /// May hold any token, including `admin`.
        Admin => "admin",
    }
}

impl Role {
    /// The widest scope a token of a user with this role may carry.
    pub fn max_scope(self) -> Scope {
        match self {
            Role::Member => Scope::Write,
            Role::Admin => Scope::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_through_text_and_json() {
        for status in BuildStatus::ALL {
            assert_eq!(status.as_str().parse::<BuildStatus>(), Ok(*status));
            let json = serde_json::to_string(status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(*kind));
        }
    }

    #[test]
    fn an_unknown_status_names_the_valid_ones() {
        let error = "done".parse::<ReportStatus>().expect_err("not a status");
        assert_eq!(
            error.to_string(),
            "`done` is not a valid report status: expected one of `in_progress`, `completed`, `failed`"
        );
    }

    #[test]
    fn scopes_include_the_narrower_ones() {
        assert!(Scope::Admin.allows(Scope::Write));
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert!(!Scope::Write.allows(Scope::Admin));
        assert_eq!(Role::Member.max_scope(), Scope::Write);
    }

    #[test]
    fn only_completed_and_cancelled_are_finished() {
        let finished: Vec<_> = BuildStatus::ALL
            .iter()
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(finished, [&BuildStatus::Completed, &BuildStatus::Cancelled]);
    }

    #[test]
    fn completed_cancelled_and_blocked_builds_are_settled() {
        let cases = [
            (BuildStatus::Running, false),
            (BuildStatus::InProgress, false),
            (BuildStatus::Failed, false),
            (BuildStatus::Blocked, true),
            (BuildStatus::Completed, true),
            (BuildStatus::Cancelled, true),
        ];
        assert_eq!(
            cases.len(),
            BuildStatus::ALL.len(),
            "every status has a case"
        );
        for (status, settled) in cases {
            assert_eq!(status.is_settled(), settled, "{status}");
        }
    }
}
