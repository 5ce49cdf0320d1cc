//! Stage names: the product's defaults, overridable per server (`BUILDSTATE_STATE_NAMES`).

use std::collections::BTreeMap;
use std::sync::Arc;

use buildstate_domain::StateCode;

/// The name shown for each state code.
#[derive(Debug, Clone, Default)]
pub struct StateNames {
    overrides: Arc<BTreeMap<StateCode, String>>,
}

impl StateNames {
    /// Parses `CODE=NAME` pairs separated by `;`, e.g. `10=golden AMI;55=nginx install`.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut overrides = BTreeMap::new();
        for pair in spec
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let (code, name) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("invalid BUILDSTATE_STATE_NAMES entry `{pair}`: expected CODE=NAME")
            })?;
            let code: StateCode = code.parse().map_err(|error| {
                anyhow::anyhow!("invalid BUILDSTATE_STATE_NAMES entry `{pair}`: {error}")
            })?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty(),
                "invalid BUILDSTATE_STATE_NAMES entry `{pair}`: the name is empty"
            );
            overrides.insert(code, name.to_owned());
        }
        Ok(StateNames {
            overrides: Arc::new(overrides),
        })
    }

    pub fn name(&self, code: StateCode) -> &str {
        self.overrides
            .get(&code)
            .map_or_else(|| code.default_name(), String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_the_named_codes() {
        let names = StateNames::parse("10=golden AMI; 55 = nginx").expect("valid spec");
        let code = |n| StateCode::new(n).expect("valid");
        assert_eq!(names.name(code(10)), "golden AMI");
        assert_eq!(names.name(code(55)), "nginx");
        assert_eq!(names.name(code(15)), "base configuration");
    }

    #[test]
    fn a_bad_spec_names_the_entry() {
        let error = StateNames::parse("7=odd").expect_err("7 is not a code");
        assert!(error.to_string().contains("`7=odd`"), "{error}");
        assert!(StateNames::parse("10").is_err());
        assert!(StateNames::parse("10=").is_err());
    }
}
