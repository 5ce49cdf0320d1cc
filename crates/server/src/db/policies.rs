//! The per-process cache of parsed retry policies ([`ParsedPolicies`]), keyed by the JSON the
//! store holds: every read of a build with a policy takes it from here instead of parsing it.

use buildstate_domain::BuildRetryPolicy;

/// Retry policies as parsed from their stored JSON.
///
/// A build's policy never changes, and the builds of one pipeline share one policy, so a few
/// entries serve every read. Without it each report parsed the policy again (at 21 rules, a
/// tenth of a report's instructions: BENCHMARKS.md, "A report under a retry policy"). The key
/// is the text itself, so an entry can never answer for another policy. At most
/// [`Self::CAPACITY`] policies are kept, the least used leaving first.
#[derive(Clone)]
pub(super) struct ParsedPolicies(moka::sync::Cache<Box<str>, BuildRetryPolicy>);

impl std::fmt::Debug for ParsedPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedPolicies({} kept)", self.0.entry_count())
    }
}

impl ParsedPolicies {
    /// Distinct policies kept. A policy is at most 21 rules (about 2 KB of JSON and 1 KB
    /// parsed), so the cache stays under a megabyte.
    pub(super) const CAPACITY: u64 = 256;

    pub(super) fn new() -> Self {
        ParsedPolicies(
            moka::sync::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .build(),
        )
    }

    /// The policy `json` holds, a policy the store wrote when its build started.
    pub(super) fn parse(&self, json: &str) -> serde_json::Result<BuildRetryPolicy> {
        if let Some(policy) = self.0.get(json) {
            return Ok(policy);
        }
        let policy = BuildRetryPolicy::from_checked_json(json)?;
        self.0.insert(json.into(), policy.clone());
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_parsed_once_and_each_text_answers_for_itself() {
        let policies = ParsedPolicies::new();
        let two = r#"{"rules":[{"stages":"15-45","max_retries":2,"restart_from":10}]}"#;
        let three = r#"{"rules":[{"stages":25,"max_retries":3}]}"#;
        let first = policies.parse(two).expect("a stored policy");
        assert_eq!(first.rules()[0].max_retries, Some(2));
        assert_eq!(policies.parse(two).expect("again"), first);
        let other = policies.parse(three).expect("another policy");
        assert_eq!(other.rules()[0].max_retries, Some(3));
        assert_ne!(other, first);
        policies.0.run_pending_tasks();
        assert_eq!(policies.0.entry_count(), 2);
    }

    #[test]
    fn text_that_is_not_a_policy_is_an_error_and_is_not_kept() {
        let policies = ParsedPolicies::new();
        assert!(policies.parse(r#"{"rules":"#).is_err());
        policies.0.run_pending_tasks();
        assert_eq!(policies.0.entry_count(), 0);
    }
}
