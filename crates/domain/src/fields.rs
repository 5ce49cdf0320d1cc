//! Validated text fields: once a `Platform`, `BuildKey`, `Labels`, … is parsed it is known good,
//! and the rejection says which rule the input broke.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a text field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

fn check_text(
    field: &'static str,
    text: &str,
    max_len: usize,
    allowed: fn(char) -> bool,
    rule: &str,
) -> Result<(), InvalidField> {
    let invalid = |reason: String| Err(InvalidField { field, reason });
    if text.is_empty() {
        return invalid("must not be empty".into());
    }
    if text.chars().count() > max_len {
        return invalid(format!("must be at most {max_len} characters"));
    }
    if let Some(bad) = text.chars().find(|c| !allowed(*c)) {
        return invalid(format!("`{bad}` is not allowed ({rule})"));
    }
    Ok(())
}

macro_rules! text_field {
    ($(#[$meta:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                let check: fn(&'static str, &str) -> Result<(), InvalidField> = $check;
                check($field, &text)?;
                Ok($name(text))
            }
        }

        impl FromStr for $name {
            type Err = InvalidField;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::try_from(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn is_slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

fn slug(field: &'static str, text: &str) -> Result<(), InvalidField> {
    check_text(
        field,
        text,
        64,
        is_slug_char,
        "use lowercase letters, digits, `.`, `_` and `-`",
    )
}

text_field!(
    /// A cloud or virtualisation platform: `aws`, `azure`, `gcp`, `vsphere`, …
    Platform, "platform", slug
);
text_field!(
    /// What is being built on the platform: `rhel8`, `ubuntu-22.04-web`, …
    ImageType, "image_type", slug
);
text_field!(
    /// A user's login name.
    Username, "username", slug
);
text_field!(
    /// A client-chosen build identity such as `aws/rhel8/<git sha>`: starting a build with a key
    /// that has an unfinished build resumes that build.
    BuildKey,
    "key",
    |field, text| {
        check_text(field, text, 200, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'),
            "use letters, digits and `. _ - / : @ +`")
    }
);
text_field!(
    /// A server-generated, URL-safe build id (`b_` and 20 lowercase letters and digits).
    BuildId,
    "build id",
    |field, text| {
        check_text(field, text, 64, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-', "build ids are URL-safe")
    }
);
text_field!(
    /// An email address (checked only for shape: one `@` with text on both sides).
    Email,
    "email",
    |field, text| {
        check_text(field, text, 254, |c| !c.is_whitespace() && !c.is_control(), "no spaces")?;
        match text.split_once('@') {
            Some((user, domain)) if !user.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(()),
            _ => Err(InvalidField { field, reason: format!("`{text}` is not an email address") }),
        }
    }
);

/// Free-form string labels on a build (git sha, pipeline URL, packer version, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub const MAX_COUNT: usize = 32;
    pub const MAX_KEY_LEN: usize = 64;
    pub const MAX_VALUE_LEN: usize = 512;

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = InvalidField;

    fn try_from(labels: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        let invalid = |reason: String| {
            Err(InvalidField {
                field: "labels",
                reason,
            })
        };
        if labels.len() > Self::MAX_COUNT {
            return invalid(format!("at most {} labels", Self::MAX_COUNT));
        }
        for (key, value) in &labels {
            check_text(
                "labels",
                key,
                Self::MAX_KEY_LEN,
                |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'),
                "label keys use letters, digits and `. _ - /`",
            )?;
            if value.chars().count() > Self::MAX_VALUE_LEN {
                return invalid(format!(
                    "the value of `{key}` must be at most {} characters",
                    Self::MAX_VALUE_LEN
                ));
            }
        }
        Ok(Labels(labels))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.0
    }
}

/// Checks an optional free-text field (description, message, reason) for length.
pub fn check_free_text(
    field: &'static str,
    text: &str,
    max_chars: usize,
) -> Result<(), InvalidField> {
    if text.chars().count() > max_chars {
        return Err(InvalidField {
            field,
            reason: format!("must be at most {max_chars} characters"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_accept_the_product_examples() {
        for ok in ["aws", "azure", "gcp", "rhel8", "ubuntu-22.04-web"] {
            assert!(ok.parse::<Platform>().is_ok(), "{ok}");
            assert!(ok.parse::<ImageType>().is_ok(), "{ok}");
        }
        assert!("aws/rhel8/0a1b2c3".parse::<BuildKey>().is_ok());
    }

    #[test]
    fn rejections_name_the_field_and_the_rule() {
        let cases: [(&str, Result<(), InvalidField>); 6] = [
            ("AWS", "AWS".parse::<Platform>().map(drop)),
            ("", "".parse::<ImageType>().map(drop)),
            ("space", "aws rhel".parse::<BuildKey>().map(drop)),
            ("email", "nobody".parse::<Email>().map(drop)),
            ("long", "x".repeat(65).parse::<Username>().map(drop)),
            ("id", "b/../x".parse::<BuildId>().map(drop)),
        ];
        let fields: Vec<&str> = cases
            .iter()
            .map(|(name, result)| result.as_ref().expect_err(name).field)
            .collect();
        assert_eq!(
            fields,
            [
                "platform",
                "image_type",
                "key",
                "email",
                "username",
                "build id"
            ]
        );
        let error = "AWS".parse::<Platform>().expect_err("uppercase");
        assert_eq!(
            error.to_string(),
            "invalid platform: `A` is not allowed (use lowercase letters, digits, `.`, `_` and `-`)"
        );
    }

    #[test]
    fn labels_are_bounded() {
        let many: BTreeMap<String, String> = (0..=Labels::MAX_COUNT)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(Labels::try_from(many).is_err());
        let bad_key = BTreeMap::from([("git sha".to_owned(), "abc".to_owned())]);
        assert!(Labels::try_from(bad_key).is_err());
        let long_value = BTreeMap::from([("k".to_owned(), "v".repeat(513))]);
        assert!(Labels::try_from(long_value).is_err());
        let fine = BTreeMap::from([("git_sha".to_owned(), "0a1b".to_owned())]);
        assert_eq!(Labels::try_from(fine.clone()).map(BTreeMap::from), Ok(fine));
    }
}
