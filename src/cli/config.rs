//! Where the CLI finds the server and its token: flags, then `BUILDSTATE_API_URL` /
//! `BUILDSTATE_API_TOKEN`, then the per-user config file that `bldst auth login` writes.
//!
//! The config file is JSON at `$BUILDSTATE_CONFIG`, else `$XDG_CONFIG_HOME/buildstate/config.json`,
//! else `~/.config/buildstate/config.json`. It is written readable only by its owner (0600, in a
//! 0700 directory), and its token is only ever sent to the URL it was saved with.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The server URL used when no flag, variable or config file names one.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8000";
/// Names the server URL.
pub const API_URL_VAR: &str = "BUILDSTATE_API_URL";
/// Holds the API token.
pub const API_TOKEN_VAR: &str = "BUILDSTATE_API_TOKEN";
/// Overrides the config file's path.
pub const CONFIG_PATH_VAR: &str = "BUILDSTATE_CONFIG";
/// Says where reports come from when `--source` is not given.
pub use buildstate_client::ci::SOURCE_VAR;
pub use buildstate_client::env::{process_env, EnvLookup};

/// Where a setting came from, for `auth status` and `--verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Environment,
    ConfigFile,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "command-line flag",
            Source::Environment => "environment",
            Source::ConfigFile => "config file",
            Source::Default => "default",
        })
    }
}

/// The saved login: a server URL and the token that goes with it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The config file's path, or `None` when neither `BUILDSTATE_CONFIG`, `XDG_CONFIG_HOME` nor
/// `HOME` is set.
pub fn config_path(env: EnvLookup<'_>) -> Option<PathBuf> {
    if let Some(path) = env(CONFIG_PATH_VAR) {
        return Some(PathBuf::from(path));
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("buildstate").join("config.json"))
}

/// Reads the config file; a missing file is `Ok(None)`. A file others may read (it holds a
/// token) is read all the same, and `warn` is told how to fix it.
///
/// Fails when the file exists but cannot be read or is not the JSON this module writes.
pub fn load(path: &Path, warn: &dyn Fn(&str)) -> Result<Option<ConfigFile>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(format!(
                "cannot read the config file `{}`: {error}",
                path.display()
            ))
        }
    };
    warn_if_readable_by_others(path, warn);
    serde_json::from_str(&text).map(Some).map_err(|error| {
        format!(
            "the config file `{}` is not valid: {error}; fix it or remove it and run `bldst auth login`",
            path.display()
        )
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, warn: &dyn Fn(&str)) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            warn(&format!(
                "warning: the config file `{}` holds an API token and is readable by others: run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _warn: &dyn Fn(&str)) {}

/// Writes the config file readable only by its owner, creating its directory (0700) if needed.
///
/// The file is written beside its final path and renamed into place, so a reader never sees
/// half of it and an existing file's looser permissions are not inherited.
pub fn save(path: &Path, config: &ConfigFile) -> Result<(), String> {
    let fail = |what: &str, error: std::io::Error| {
        format!(
            "cannot {what} the config file `{}`: {error}",
            path.display()
        )
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|error| fail("create the directory of", error))?;
    }
    let json = serde_json::to_vec_pretty(config)
        .map_err(|error| format!("cannot encode the config file: {error}"))?;
    let temporary = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = create_private_file(&temporary).map_err(|error| fail("write", error))?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|error| fail("write", error))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| fail("write", error))
}

/// Removes the config file; `Ok(false)` if there was none.
pub fn remove(path: &Path) -> Result<bool, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(format!(
            "cannot remove the config file `{}`: {error}",
            path.display()
        )),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The server URL and token a command uses, each with where it came from.
#[derive(Clone)]
pub struct Settings {
    pub api_url: String,
    pub api_url_from: Source,
    pub token: Option<String>,
    pub token_from: Option<Source>,
    pub config_path: Option<PathBuf>,
    /// Set when the config file has a token that was not used because it was saved for another
    /// URL than the one in use: the URL it belongs to.
    pub saved_token_url: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("api_url", &self.api_url)
            .field("api_url_from", &self.api_url_from)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_from", &self.token_from)
            .field("config_path", &self.config_path)
            .finish()
    }
}

/// Layers the settings: `flag_url`/`flag_token`, then the environment, then `file`, then the
/// default URL.
///
/// The file's token is used only with the URL it was saved for, so that pointing the CLI at
/// another server never sends it there.
pub fn resolve(
    flag_url: Option<&str>,
    flag_token: Option<&str>,
    env: EnvLookup<'_>,
    file: Option<&ConfigFile>,
    config_path: Option<PathBuf>,
) -> Settings {
    let file_url = file.and_then(|file| file.api_url.as_deref());
    let (api_url, api_url_from) = if let Some(url) = flag_url.filter(|url| !url.is_empty()) {
        (url.to_owned(), Source::Flag)
    } else if let Some(url) = env(API_URL_VAR) {
        (url, Source::Environment)
    } else if let Some(url) = file_url {
        (url.to_owned(), Source::ConfigFile)
    } else {
        (DEFAULT_API_URL.to_owned(), Source::Default)
    };
    let mut saved_token_url = None;
    let (token, token_from) = if let Some(token) = flag_token.filter(|token| !token.is_empty()) {
        (Some(token.to_owned()), Some(Source::Flag))
    } else if let Some(token) = env(API_TOKEN_VAR) {
        (Some(token), Some(Source::Environment))
    } else {
        match file.and_then(|file| file.token.clone()) {
            Some(token) if same_url(file_url.unwrap_or(DEFAULT_API_URL), &api_url) => {
                (Some(token), Some(Source::ConfigFile))
            }
            Some(_) => {
                saved_token_url = Some(file_url.unwrap_or(DEFAULT_API_URL).to_owned());
                (None, None)
            }
            None => (None, None),
        }
    };
    Settings {
        api_url,
        api_url_from,
        token,
        token_from,
        config_path,
        saved_token_url,
    }
}

fn same_url(left: &str, right: &str) -> bool {
    left.trim_end_matches('/') == right.trim_end_matches('/')
}

/// Where a report comes from: `--source`, else `BUILDSTATE_SOURCE`, else the URL of the CI run
/// the CLI is running in (GitHub Actions, GitLab CI, Jenkins, Concourse), else nothing.
pub use buildstate_client::ci::report_source;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn saved(url: &str, token: &str) -> ConfigFile {
        ConfigFile {
            api_url: Some(url.to_owned()),
            token: Some(token.to_owned()),
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_config_file() {
        let env = env_of(&[(API_URL_VAR, "http://env:1"), (API_TOKEN_VAR, "env-token")]);
        let file = saved("http://file:1", "file-token");
        let from_flags = resolve(
            Some("http://flag:1"),
            Some("flag-token"),
            &env,
            Some(&file),
            None,
        );
        assert_eq!(from_flags.api_url, "http://flag:1");
        assert_eq!(from_flags.api_url_from, Source::Flag);
        assert_eq!(from_flags.token.as_deref(), Some("flag-token"));
        let from_env = resolve(None, None, &env, Some(&file), None);
        assert_eq!(
            (from_env.api_url.as_str(), from_env.token.as_deref()),
            ("http://env:1", Some("env-token"))
        );
        let from_file = resolve(None, None, &env_of(&[]), Some(&file), None);
        assert_eq!(from_file.api_url_from, Source::ConfigFile);
        assert_eq!(from_file.token_from, Some(Source::ConfigFile));
        let defaults = resolve(None, None, &env_of(&[]), None, None);
        assert_eq!(defaults.api_url, DEFAULT_API_URL);
        assert_eq!(defaults.token, None);
    }

    #[test]
    fn a_saved_token_is_never_sent_to_another_server() {
        let file = saved("http://file:1/", "file-token");
        let elsewhere = resolve(
            Some("http://other:1"),
            None,
            &env_of(&[]),
            Some(&file),
            None,
        );
        assert_eq!(elsewhere.token, None);
        assert_eq!(elsewhere.saved_token_url.as_deref(), Some("http://file:1/"));
        let same = resolve(Some("http://file:1"), None, &env_of(&[]), Some(&file), None);
        assert_eq!(same.token.as_deref(), Some("file-token"));
    }

    #[test]
    fn the_config_path_follows_the_override_then_xdg_then_home() {
        let path = |pairs: &[(&str, &str)]| config_path(&env_of(pairs));
        assert_eq!(
            path(&[(CONFIG_PATH_VAR, "/tmp/c.json"), ("HOME", "/home/u")]),
            Some(PathBuf::from("/tmp/c.json"))
        );
        assert_eq!(
            path(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]),
            Some(PathBuf::from("/xdg/buildstate/config.json"))
        );
        assert_eq!(
            path(&[("HOME", "/home/u")]),
            Some(PathBuf::from("/home/u/.config/buildstate/config.json"))
        );
        assert_eq!(path(&[]), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_saved_file_is_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("nested").join("config.json");
        save(&path, &saved("http://file:1", "secret")).expect("saved");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("parent")), 0o700);
        let loaded = load(&path, &|_| {}).expect("readable").expect("present");
        assert_eq!(loaded.token.as_deref(), Some("secret"));
        assert!(remove(&path).expect("removed"));
        assert_eq!(load(&path, &|_| {}).expect("no error"), None);
    }
}
