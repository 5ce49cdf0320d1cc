//! A build's retry policy as people write it — YAML or JSON (YAML's superset) — in a file for
//! the CLI, an input for the GitHub Action or the setup action. Parsed into the domain's
//! [`BuildRetryPolicy`], whose parsing checks every rule, so each front end refuses the same
//! policies with the same sentences before anything is sent.

use buildstate_domain::BuildRetryPolicy;

/// A retry policy that could not be read: `origin` names where it came from (a file's path,
/// an input's name), `reason` what was wrong, with the rule and setting where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy in {origin}: {reason}")]
pub struct InvalidPolicyText {
    pub origin: String,
    pub reason: String,
}

/// Parses `text` (YAML or JSON) from `origin` into a checked policy.
pub fn parse_policy(text: &str, origin: &str) -> Result<BuildRetryPolicy, InvalidPolicyText> {
    serde_norway::from_str(text).map_err(|error| InvalidPolicyText {
        origin: origin.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_make_the_same_policy_and_bad_ones_name_the_origin_and_the_rule() {
        let yaml = "rules:\n  - stages: 5\n    max_retries: 3\n  - stages: \"15-45\"\n    restart_from: 10\n";
        let json = r#"{"rules": [{"stages": 5, "max_retries": 3}, {"stages": "15-45", "restart_from": 10}]}"#;
        assert_eq!(
            parse_policy(yaml, "`policy.yaml`").expect("yaml"),
            parse_policy(json, "`policy.json`").expect("json")
        );
        let cases = [
            (
                "rules:\n  - stages: 25\n    restart_from: 30\n",
                "rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25",
            ),
            (
                "rules:\n  - stages: 25\n    retries: 2\n",
                "unknown field `retries`",
            ),
            ("rule: []\n", "unknown field `rule`"),
            ("rules: [", "invalid retry policy in `p.yaml`"),
        ];
        for (text, words) in cases {
            let error = parse_policy(text, "`p.yaml`").expect_err(text).to_string();
            assert!(
                error.starts_with("invalid retry policy in `p.yaml`: ") && error.contains(words),
                "{text}: {error}"
            );
        }
    }
}
