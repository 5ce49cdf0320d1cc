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
        return invalid(format!("`{}` is not allowed ({rule})", shown(bad)));
    }
    Ok(())
}

/// A rejected character as a message shows it: control characters escaped (`\0`, `\u{1b}`), so
/// none reaches a terminal or a log raw.
fn shown(c: char) -> String {
    if c.is_control() {
        c.escape_debug().to_string()
    } else {
        c.to_string()
    }
}

/// The OpenAPI schema of a text field: a string of at most `max_length` characters matching
/// `pattern`, the same rule its `check` applies, so generated clients and fuzzers agree with the
/// server.
#[cfg(feature = "openapi")]
fn text_schema(
    pattern: &str,
    max_length: usize,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_length))
        .pattern(Some(pattern))
        .into()
}

macro_rules! text_field {
    ($(#[$meta:meta])* $name:ident, $field:literal, $check:expr, pattern = $pattern:expr, max = $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                text_schema($pattern, $max)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

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

/// What [`slug`] accepts, as the OpenAPI document states it.
#[cfg(feature = "openapi")]
const SLUG_PATTERN: &str = "^[a-z0-9._-]{1,64}$";
/// What a URL-safe id accepts, as the OpenAPI document states it.
#[cfg(feature = "openapi")]
const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

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
    Platform, "platform", slug, pattern = SLUG_PATTERN, max = 64
);
text_field!(
    /// What is being built on the platform: `rhel8`, `ubuntu-22.04-web`, …
    ImageType, "image_type", slug, pattern = SLUG_PATTERN, max = 64
);
text_field!(
    /// A user's login name.
    Username, "username", slug, pattern = SLUG_PATTERN, max = 64
);
text_field!(
    /// A client-chosen build identity such as `aws/rhel8/<git sha>`: starting a build with a key
    /// that has an unfinished build resumes that build.
    BuildKey,
    "key",
    |field, text| {
        check_text(field, text, 200, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'),
            "use letters, digits and `. _ - / : @ +`")
    },
    pattern = "^[A-Za-z0-9._/:@+-]{1,200}$",
    max = 200
);
text_field!(
    /// A server-generated, URL-safe build id (`b_` and 20 lowercase letters and digits).
    BuildId,
    "build id",
    |field, text| {
        check_text(field, text, 64, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-', "build ids are URL-safe")
    },
    pattern = ID_PATTERN,
    max = 64
);
text_field!(
    /// A server-generated API token id (`t_` and 16 lowercase letters and digits).
    TokenId,
    "token id",
    |field, text| {
        check_text(field, text, 64, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-', "token ids are URL-safe")
    },
    pattern = ID_PATTERN,
    max = 64
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
    },
    pattern = "^[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@\\x00-\\x1f\\x7f-\\x9f]+$",
    max = 254
);

/// Free-form string labels on a build (git sha, pipeline URL, packer version, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Labels(BTreeMap<String, String>);

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Labels {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Free-form string labels: keys of letters, digits and `. _ - /`, values of free text",
            ))
            .max_properties(Some(Labels::MAX_COUNT))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9._/-]{1,64}$")),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(
                free_text_schema(Labels::MAX_VALUE_LEN, false, false).into(),
            )))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Labels {}

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
            if let Some(bad) = value.chars().find(|c| !is_free_text_char(*c)) {
                return invalid(format!(
                    "the value of `{key}` holds the control character `{}`: only newline \
                     and tab are allowed",
                    shown(bad)
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

/// Whether `c` may appear in free text (descriptions, messages, reasons, sources, label
/// values): anything but a control character, except that newline and tab are kept.
///
/// Decided here once for every front end and both databases: PostgreSQL cannot store NUL in
/// text at all (SQLite can), and the other control characters are terminal escapes or
/// invisible in a log, so neither belongs in a build's history.
pub fn is_free_text_char(c: char) -> bool {
    c == '\n' || c == '\t' || !c.is_control()
}

/// The characters [`is_free_text_char`] accepts, as a JSON Schema pattern.
pub const FREE_TEXT_PATTERN: &str = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$";
/// [`FREE_TEXT_PATTERN`] with at least one character that is not whitespace: what a required
/// text (an operator's reason, a token's description) must hold.
pub const NON_BLANK_FREE_TEXT_PATTERN: &str = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$";

/// The OpenAPI schema of a free-text field of at most `max_chars` characters: what
/// [`check_free_text`] accepts (and, with `non_blank`, not only whitespace).
#[cfg(feature = "openapi")]
pub fn free_text_schema(
    max_chars: usize,
    non_blank: bool,
    nullable: bool,
) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    let pattern = if non_blank {
        NON_BLANK_FREE_TEXT_PATTERN
    } else {
        FREE_TEXT_PATTERN
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .min_length(non_blank.then_some(1))
        .max_length(Some(max_chars))
        .pattern(Some(pattern))
        .into()
}

/// Checks a free-text field (description, message, reason, source) for length and characters.
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
    if let Some(bad) = text.chars().find(|c| !is_free_text_char(*c)) {
        return Err(InvalidField {
            field,
            reason: format!(
                "holds the control character `{}`: only newline and tab are allowed",
                shown(bad)
            ),
        });
    }
    Ok(())
}

/// `text` made acceptable to [`check_free_text`]: `\r\n` becomes `\n`, a lone `\r` a newline,
/// and other control characters (terminal colour escapes, NUL) are dropped. For front ends
/// that pass on text they did not write, such as the tail of a failed command's output.
pub fn clean_free_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut cleaned = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            // An ANSI escape sequence (`ESC [ params letter`): drop it whole, not just its ESC.
            chars.next();
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() || !is_free_text_char(next) {
                    break;
                }
            }
        } else if is_free_text_char(c) {
            cleaned.push(c);
        }
    }
    cleaned
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

    #[test]
    fn free_text_keeps_newline_and_tab_and_refuses_other_control_characters() {
        let cases = [
            ("plain text", true),
            ("two\nlines\twith a tab", true),
            ("unicode: ééé ✓", true),
            ("a NUL \u{0} byte", false),
            ("a bell \u{7}", false),
            ("a carriage return \r", false),
            ("colour \u{1b}[31mred", false),
            ("a C1 control \u{85}", false),
        ];
        for (text, valid) in cases {
            let checked = check_free_text("message", text, 100);
            assert_eq!(checked.is_ok(), valid, "{text:?}: {checked:?}");
            if let Err(error) = checked {
                assert_eq!(error.field, "message");
                assert!(
                    !error.to_string().chars().any(|c| c.is_control()),
                    "the message escapes the character: {error:?}"
                );
            }
        }
        assert_eq!(
            check_free_text("description", "a\u{0}b", 100)
                .expect_err("NUL")
                .to_string(),
            "invalid description: holds the control character `\\0`: only newline and tab are allowed"
        );
        assert!(
            check_free_text("message", "xx", 1).is_err(),
            "length still counts"
        );
        let nul_label = BTreeMap::from([("k".to_owned(), "v\u{0}".to_owned())]);
        assert_eq!(
            Labels::try_from(nul_label).expect_err("NUL").field,
            "labels"
        );
        let nul_slug = "aws\u{0}".parse::<Platform>().expect_err("NUL");
        assert!(nul_slug.to_string().contains("`\\0`"), "{nul_slug}");
    }

    #[test]
    fn cleaned_text_passes_the_free_text_rule() {
        let cleaned = clean_free_text("\u{1b}[1;31merror\u{1b}[0m: disk\r\nfull\u{0}\rdone\t!");
        assert_eq!(cleaned, "error: disk\nfull\ndone\t!");
        assert!(check_free_text("message", &cleaned, 100).is_ok());
    }
}
