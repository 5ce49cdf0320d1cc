//! Scratch PostgreSQL databases, created and dropped through `psql` (the bench needs no SQL
//! driver of its own), on a server that must be on this machine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use reqwest::Url;

/// The flags that name the local PostgreSQL a benchmark makes its scratch databases on.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresFlags {
    /// A PostgreSQL superuser URL on this machine; a scratch database beside it is used and
    /// dropped at the end.
    #[arg(
        long,
        env = "BLDST_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    #[arg(long, default_value = "psql")]
    pub psql: PathBuf,
}

impl PostgresFlags {
    /// The admin URL, checked, and `psql`.
    #[allow(dead_code)] // bldst-reports-bench and bldst-retries-bench; bldst-bench compiles this module too
    pub fn admin(&self) -> anyhow::Result<(AdminUrl, Psql)> {
        Ok((
            AdminUrl::parse(&self.postgres_url)?,
            Psql {
                program: self.psql.clone(),
            },
        ))
    }
}

/// A superuser URL of a local PostgreSQL, from which scratch-database URLs are derived.
#[derive(Debug, Clone)]
pub struct AdminUrl(Url);

impl AdminUrl {
    /// Accepts only `postgres://` URLs whose host is a loopback address: every byte of load
    /// this benchmark makes stays on this machine.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = Url::parse(raw).with_context(|| format!("`{raw}` is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "the PostgreSQL URL must start with postgres://"
        );
        let host = url.host_str().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(
            loopback,
            "the PostgreSQL URL must name a loopback host (127.0.0.1, localhost, [::1]), not `{host}`"
        );
        Ok(AdminUrl(url))
    }

    /// The same server and user, database `name`.
    pub fn for_database(&self, name: &str) -> String {
        let mut url = self.0.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Runs SQL through `psql`, stopping at the first error.
#[derive(Debug, Clone)]
pub struct Psql {
    pub program: PathBuf,
}

impl Psql {
    /// Runs `sql` (one or more statements) on the database at `url`.
    pub fn execute(&self, url: &str, sql: &str) -> anyhow::Result<()> {
        self.run(url, &["-c", sql])
    }

    /// Runs the SQL file at `path` on the database at `url`.
    pub fn execute_file(&self, url: &str, path: &Path) -> anyhow::Result<()> {
        let path = path.to_str().context("the SQL file's path is not UTF-8")?;
        self.run(url, &["-f", path])
    }

    fn run(&self, url: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new(&self.program)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run `{}`", self.program.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "psql failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}

/// A database created for one run and dropped (connections and all) when this is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    pub url: String,
    name: String,
    admin: AdminUrl,
    psql: Psql,
    /// Dropped when this goes out of scope, unless kept for a later run.
    drop_at_end: bool,
}

impl ScratchDatabase {
    /// Creates database `name` (dropping a leftover of the same name first).
    pub fn create(admin: &AdminUrl, psql: &Psql, name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "scratch database name `{name}` must be lowercase letters, digits and `_`"
        );
        psql.execute(
            admin.as_str(),
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql.execute(admin.as_str(), &format!("CREATE DATABASE {name}"))
            .with_context(|| format!("failed to create scratch database `{name}`"))?;
        Ok(ScratchDatabase {
            url: admin.for_database(name),
            name: name.to_owned(),
            admin: admin.clone(),
            psql: psql.clone(),
            drop_at_end: true,
        })
    }

    /// Database `name` as an earlier run left it (see [`ScratchDatabase::keep`]); kept again.
    #[allow(dead_code)] // bldst-reports-bench's `--reuse`; bldst-bench compiles this module too
    pub fn existing(admin: &AdminUrl, psql: &Psql, name: &str) -> Self {
        ScratchDatabase {
            url: admin.for_database(name),
            name: name.to_owned(),
            admin: admin.clone(),
            psql: psql.clone(),
            drop_at_end: false,
        }
    }

    /// Leaves the database in place at the end, for a later run to measure again.
    #[allow(dead_code)] // bldst-reports-bench's `--keep`; bldst-bench compiles this module too
    pub fn keep(&mut self) {
        self.drop_at_end = false;
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if !self.drop_at_end {
            return;
        }
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = self.psql.execute(self.admin.as_str(), &drop_sql) {
            eprintln!(
                "warning: could not drop scratch database `{}`: {error:#}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_postgres_urls_are_accepted() {
        for good in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://postgres@localhost/test",
            "postgres://postgres@[::1]:5432/test",
        ] {
            assert!(AdminUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "postgres://postgres@10.0.0.5/test",
            "postgres://postgres@db.example.com/test",
            "mysql://root@127.0.0.1/test",
        ] {
            assert!(AdminUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_scratch_url_keeps_server_user_and_options() -> anyhow::Result<()> {
        let admin = AdminUrl::parse("postgres://postgres@127.0.0.1:5432/test?sslmode=disable")?;
        assert_eq!(
            admin.for_database("bldst_bench_1"),
            "postgres://postgres@127.0.0.1:5432/bldst_bench_1?sslmode=disable"
        );
        Ok(())
    }
}
