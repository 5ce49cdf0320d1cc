//! Token powers: who may create and revoke API tokens, and what a created token may hold.
//!
//! The model, as users of Vault or GitHub tokens expect it:
//! - creating or revoking a token needs a `write` token; for another user's tokens, `admin`;
//! - a created token's scope is at most its creator's (and at most its user's role allows);
//! - a created token expires no later than its creator: asking for no expiry from an expiring
//!   token gives the creator's expiry, asking for a later one is refused;
//! - revoking a token revokes the tokens it created, transitively (the store does that);
//! - a token that is not `admin` revokes only its own user's tokens, of at most its own scope.
//!
//! Pure and clockless: the caller passes `now`.

use chrono::{DateTime, Duration, Utc};

use crate::fields::{check_free_text, InvalidField, Username};
use crate::limits::MAX_TOKEN_DESCRIPTION_CHARS;
use crate::status::{Role, Scope};

/// The longest lifetime a token may be given, in seconds (100 years): leave the expiry out for
/// a token that never expires.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 3_155_760_000;

/// The token making a request, as far as these rules care.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub username: &'a Username,
    pub scope: Scope,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a token request was refused. The API maps each to its status: the scope refusals are
/// 403s, the rest 422s naming their field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// The request needs a wider token (`write`, or `admin` for another user's tokens).
    #[error("this needs a token with `{needed}` scope; the token used has `{held}`")]
    InsufficientScope { needed: Scope, held: Scope },
    /// A token cannot create a token wider than itself.
    #[error("a `{held}` token cannot create a `{requested}` token: a created token's scope is at most its creator's")]
    ScopeAboveCreator { requested: Scope, held: Scope },
    /// A token cannot revoke a token wider than itself.
    #[error("a `{held}` token cannot revoke a `{target}` token: use a token with at least `{target}` scope")]
    RevokeAboveScope { target: Scope, held: Scope },
    /// The user's role cannot hold the requested scope.
    #[error("user `{username}` has the `{role}` role, which cannot hold `{requested}` tokens")]
    ScopeAboveRole {
        username: Username,
        role: Role,
        requested: Scope,
    },
    /// A token's description says what it is for: it may not be blank.
    #[error("say what the token is for, e.g. \"concourse aws-rhel8 pipeline\"")]
    DescriptionMissing,
    /// The description breaks the free-text rules (its length, a control character).
    #[error(transparent)]
    DescriptionInvalid(InvalidField),
    #[error("must be positive")]
    ExpiryNotPositive,
    #[error("must be at most {MAX_TOKEN_LIFETIME_SECS} seconds (100 years); leave it out for a token that never expires")]
    ExpiryTooLarge,
    /// A created token cannot outlive its creator.
    #[error("must be at most {max_seconds}: the token creating it expires at {creator_expires_at}, and a created token cannot outlive its creator")]
    ExpiryAfterCreator {
        max_seconds: i64,
        creator_expires_at: DateTime<Utc>,
    },
}

impl TokenRefusal {
    /// The request field the refusal is about, for a 422; `None` for the scope refusals (403).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            TokenRefusal::InsufficientScope { .. }
            | TokenRefusal::ScopeAboveCreator { .. }
            | TokenRefusal::RevokeAboveScope { .. } => None,
            TokenRefusal::ScopeAboveRole { .. } => Some("scope"),
            TokenRefusal::DescriptionMissing | TokenRefusal::DescriptionInvalid(_) => {
                Some("description")
            }
            TokenRefusal::ExpiryNotPositive
            | TokenRefusal::ExpiryTooLarge
            | TokenRefusal::ExpiryAfterCreator { .. } => Some("expires_in_seconds"),
        }
    }
}

/// May `creator` create a `scope` token for `username`? Checked before the user is looked up,
/// so a token that may not manage other users learns nothing about them.
pub fn authorize_token_creation(
    creator: &Holder<'_>,
    username: &Username,
    scope: Scope,
) -> Result<(), TokenRefusal> {
    let needed = if username == creator.username {
        Scope::Write
    } else {
        Scope::Admin
    };
    if !creator.scope.allows(needed) {
        return Err(TokenRefusal::InsufficientScope {
            needed,
            held: creator.scope,
        });
    }
    if !creator.scope.allows(scope) {
        return Err(TokenRefusal::ScopeAboveCreator {
            requested: scope,
            held: creator.scope,
        });
    }
    Ok(())
}

/// Is `description` fit to describe a token: not blank, and within the free-text rules?
pub fn check_description(description: &str) -> Result<(), TokenRefusal> {
    if description.trim().is_empty() {
        return Err(TokenRefusal::DescriptionMissing);
    }
    check_free_text("description", description, MAX_TOKEN_DESCRIPTION_CHARS)
        .map_err(TokenRefusal::DescriptionInvalid)
}

/// The expiry of a new `scope` token for a user with `role`, created by `creator` at `now`
/// with `expires_in_seconds` asked for (`None`: never, or the creator's expiry if it has one).
pub fn grant_token(
    creator: &Holder<'_>,
    username: &Username,
    role: Role,
    scope: Scope,
    expires_in_seconds: Option<u64>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, TokenRefusal> {
    authorize_token_creation(creator, username, scope)?;
    let asked = grant_root_token(username, role, scope, expires_in_seconds, now)?;
    match (asked, creator.expires_at) {
        (Some(asked), Some(limit)) if asked > limit => Err(TokenRefusal::ExpiryAfterCreator {
            max_seconds: (limit - now).num_seconds().max(0),
            creator_expires_at: limit,
        }),
        (None, limit) => Ok(limit),
        (asked, _) => Ok(asked),
    }
}

/// The expiry of a new root token, one no token created (`bldst server token create`, run
/// with the server's own key): the rules of [`grant_token`] but the creator's.
pub fn grant_root_token(
    username: &Username,
    role: Role,
    scope: Scope,
    expires_in_seconds: Option<u64>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, TokenRefusal> {
    if !role.max_scope().allows(scope) {
        return Err(TokenRefusal::ScopeAboveRole {
            username: username.clone(),
            role,
            requested: scope,
        });
    }
    match expires_in_seconds {
        Some(0) => Err(TokenRefusal::ExpiryNotPositive),
        Some(seconds) if seconds > MAX_TOKEN_LIFETIME_SECS => Err(TokenRefusal::ExpiryTooLarge),
        Some(seconds) => i64::try_from(seconds)
            .ok()
            .and_then(Duration::try_seconds)
            .and_then(|lifetime| now.checked_add_signed(lifetime))
            .map(Some)
            .ok_or(TokenRefusal::ExpiryTooLarge),
        None => Ok(None),
    }
}

/// Whose token may `actor` revoke? `Ok` when it may revoke a `scope` token of `owner`.
///
/// `Err(None)`: the token is another user's and the actor is not admin: answer "not found",
/// since whether someone else's token id exists is not the actor's to learn.
pub fn authorize_revocation(
    actor: &Holder<'_>,
    owner: &Username,
    scope: Scope,
) -> Result<(), Option<TokenRefusal>> {
    if !actor.scope.allows(Scope::Write) {
        return Err(Some(TokenRefusal::InsufficientScope {
            needed: Scope::Write,
            held: actor.scope,
        }));
    }
    if actor.scope == Scope::Admin {
        return Ok(());
    }
    if owner != actor.username {
        return Err(None);
    }
    if !actor.scope.allows(scope) {
        return Err(Some(TokenRefusal::RevokeAboveScope {
            target: scope,
            held: actor.scope,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Username {
        text.parse().expect("username")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("time")
    }

    #[test]
    fn creating_needs_write_and_admin_for_other_users_and_never_widens_the_scope() {
        let ci = name("ci");
        let other = name("other");
        let holder = |scope| Holder {
            username: &ci,
            scope,
            expires_at: None,
        };
        let cases = [
            (Scope::Read, &ci, Scope::Read, Err(Scope::Write)),
            (Scope::Write, &ci, Scope::Read, Ok(())),
            (Scope::Write, &ci, Scope::Write, Ok(())),
            (Scope::Write, &other, Scope::Read, Err(Scope::Admin)),
            (Scope::Admin, &other, Scope::Admin, Ok(())),
        ];
        for (held, target, scope, expected) in cases {
            let answer = authorize_token_creation(&holder(held), target, scope);
            let expected =
                expected.map_err(|needed| TokenRefusal::InsufficientScope { needed, held });
            assert_eq!(answer, expected, "{held} creating {scope} for {target}");
        }
        assert_eq!(
            authorize_token_creation(&holder(Scope::Write), &ci, Scope::Admin),
            Err(TokenRefusal::ScopeAboveCreator {
                requested: Scope::Admin,
                held: Scope::Write
            })
        );
    }

    #[test]
    fn a_created_token_never_outlives_its_creator() {
        let ci = name("ci");
        let now = at(0);
        let expiring = Holder {
            username: &ci,
            scope: Scope::Write,
            expires_at: Some(at(3600)),
        };
        let permanent = Holder {
            expires_at: None,
            ..expiring
        };
        let grant = |holder: &Holder<'_>, seconds| {
            grant_token(holder, &ci, Role::Member, Scope::Read, seconds, now)
        };
        assert_eq!(
            grant(&permanent, None),
            Ok(None),
            "no expiry asked, none given"
        );
        assert_eq!(grant(&permanent, Some(60)), Ok(Some(at(60))));
        assert_eq!(
            grant(&expiring, None),
            Ok(Some(at(3600))),
            "inherits the creator's"
        );
        assert_eq!(grant(&expiring, Some(60)), Ok(Some(at(60))));
        assert_eq!(grant(&expiring, Some(3600)), Ok(Some(at(3600))));
        let later = grant(&expiring, Some(3601)).expect_err("outlives the creator");
        assert_eq!(later.field(), Some("expires_in_seconds"));
        assert!(
            later.to_string().starts_with("must be at most 3600"),
            "{later}"
        );
        assert_eq!(
            grant(&permanent, Some(0)),
            Err(TokenRefusal::ExpiryNotPositive)
        );
        assert_eq!(
            grant(&permanent, Some(u64::MAX)),
            Err(TokenRefusal::ExpiryTooLarge)
        );
    }

    #[test]
    fn a_members_tokens_are_at_most_write() {
        let admin = name("admin");
        let bob = name("bob");
        let holder = Holder {
            username: &admin,
            scope: Scope::Admin,
            expires_at: None,
        };
        let refused = grant_token(&holder, &bob, Role::Member, Scope::Admin, None, at(0))
            .expect_err("members hold no admin tokens");
        assert_eq!(refused.field(), Some("scope"));
    }

    #[test]
    fn a_description_says_what_the_token_is_for_in_free_text() {
        let long = "x".repeat(MAX_TOKEN_DESCRIPTION_CHARS + 1);
        let cases = [
            ("concourse aws-rhel8 pipeline", None),
            ("", Some("say what the token is for")),
            ("  \n", Some("say what the token is for")),
            (long.as_str(), Some("must be at most")),
            ("bell\u{7}", Some("control character")),
        ];
        for (description, refused) in cases {
            let answer = check_description(description);
            match refused {
                None => assert_eq!(answer, Ok(()), "{description:?}"),
                Some(sentence) => {
                    let refusal = answer.expect_err(description);
                    assert_eq!(refusal.field(), Some("description"));
                    assert!(refusal.to_string().contains(sentence), "{refusal}");
                }
            }
        }
    }

    #[test]
    fn a_root_token_follows_the_role_and_expiry_rules_with_no_creator_to_outlive() {
        let admin = name("admin");
        let now = at(0);
        let cases = [
            (Role::Admin, Scope::Admin, None, Ok(None)),
            (Role::Admin, Scope::Read, Some(60), Ok(Some(at(60)))),
            (Role::Member, Scope::Admin, None, Err(Some("scope"))),
            (
                Role::Admin,
                Scope::Admin,
                Some(0),
                Err(Some("expires_in_seconds")),
            ),
            (
                Role::Admin,
                Scope::Admin,
                Some(u64::MAX),
                Err(Some("expires_in_seconds")),
            ),
        ];
        for (role, scope, seconds, expected) in cases {
            let answer = grant_root_token(&admin, role, scope, seconds, now);
            assert_eq!(
                answer.map_err(|refusal| refusal.field()),
                expected,
                "{role} {scope} {seconds:?}"
            );
        }
    }

    #[test]
    fn revoking_needs_write_and_stays_within_the_users_own_tokens_and_scope() {
        let ci = name("ci");
        let other = name("other");
        let holder = |scope| Holder {
            username: &ci,
            scope,
            expires_at: None,
        };
        assert!(matches!(
            authorize_revocation(&holder(Scope::Read), &ci, Scope::Read),
            Err(Some(TokenRefusal::InsufficientScope { .. }))
        ));
        assert_eq!(
            authorize_revocation(&holder(Scope::Write), &ci, Scope::Write),
            Ok(())
        );
        assert_eq!(
            authorize_revocation(&holder(Scope::Write), &other, Scope::Read),
            Err(None)
        );
        assert!(matches!(
            authorize_revocation(&holder(Scope::Write), &ci, Scope::Admin),
            Err(Some(TokenRefusal::RevokeAboveScope { .. }))
        ));
        assert_eq!(
            authorize_revocation(&holder(Scope::Admin), &other, Scope::Admin),
            Ok(())
        );
    }
}
