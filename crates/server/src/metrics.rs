//! Prometheus metrics (`GET /metrics`, text format).
//!
//! Counters are per process (transitions this process recorded, its HTTP requests): Prometheus
//! sums them over the processes it scrapes. Gauges describe the whole database (builds by
//! status, blocked and stuck builds) and are read from it at scrape time, so every process
//! reports the same values: aggregate them with `max`, not `sum`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use buildstate_domain::resumes::Resume;
use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::{BuildStatus, EventKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    platform: String,
    image_type: String,
    code: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    platform: String,
    image_type: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    platform: String,
    image_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's pattern (`/builds/{id}`), never the raw path: bounded cardinality.
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

fn request_duration() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's metrics. Shared through the app state.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    retries_due: Family<RetryLabels, Counter>,
    resumes: Family<GroupLabels, Counter>,
    stages_not_rerun: Family<GroupLabels, Counter>,
    resume_saved_seconds: Family<GroupLabels, Counter<f64, AtomicU64>>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    builds: Family<StatusLabels, Gauge>,
    blocked: Gauge,
    stuck: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("buildstate");
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "History entries recorded by this process, by platform, image type, stage code and status (entry kind)",
            transitions.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "retries",
            "Stage failures this process recorded that will be retried, plus operator retries",
            retries.clone(),
        );
        let retries_due = Family::<RetryLabels, Counter>::default();
        registry.register(
            "retries_due",
            "Retries this process announced (retry_due entries): a failed stage's backoff ended with retries left",
            retries_due.clone(),
        );
        let resumes = Family::<GroupLabels, Counter>::default();
        registry.register(
            "resumes",
            "Resumes this process recorded: a run carried on where a build had stopped (docs/rules.md, \"What resuming saved\")",
            resumes.clone(),
        );
        let stages_not_rerun = Family::<GroupLabels, Counter>::default();
        registry.register(
            "stages_not_rerun",
            "Stages the resumes this process recorded did not run again",
            stages_not_rerun.clone(),
        );
        let resume_saved_seconds = Family::<GroupLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "resume_saved_seconds",
            "Recorded durations of the stages not run again (unknown durations excluded), in seconds",
            resume_saved_seconds.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered by this process",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                request_duration,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the response's head; streams excluded)",
            request_seconds.clone(),
        );
        let builds = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "builds",
            "Builds by status (whole database)",
            builds.clone(),
        );
        let blocked = Gauge::default();
        registry.register(
            "blocked_builds",
            "Builds blocked, waiting for an operator (whole database)",
            blocked.clone(),
        );
        let stuck = Gauge::default();
        registry.register(
            "stuck_builds",
            "Unfinished builds with nothing recorded for longer than their stuck threshold (whole database; counts at most 500)",
            stuck.clone(),
        );
        Metrics {
            registry,
            transitions,
            retries,
            retries_due,
            resumes,
            stages_not_rerun,
            resume_saved_seconds,
            requests,
            request_seconds,
            builds,
            blocked,
            stuck,
        }
    }

    /// Counts what a change recorded; `build` is the build right after it.
    pub fn observe(&self, build: &Build, entries: &[HistoryEntry]) {
        for entry in entries {
            let code = entry.state.to_string();
            self.transitions
                .get_or_create(&TransitionLabels {
                    platform: build.platform.to_string(),
                    image_type: build.image_type.to_string(),
                    code: code.clone(),
                    status: entry.kind.as_str().to_owned(),
                })
                .inc();
            let counter = match entry.kind {
                EventKind::Failed if build.status == BuildStatus::Failed => &self.retries,
                EventKind::Retried => &self.retries,
                EventKind::RetryDue => &self.retries_due,
                _ => continue,
            };
            counter
                .get_or_create(&RetryLabels {
                    platform: build.platform.to_string(),
                    image_type: build.image_type.to_string(),
                    code,
                })
                .inc();
        }
    }

    /// Counts a resume this process recorded on `build`.
    pub fn observe_resume(&self, build: &Build, resume: &Resume) {
        let labels = GroupLabels {
            platform: build.platform.to_string(),
            image_type: build.image_type.to_string(),
        };
        self.resumes.get_or_create(&labels).inc();
        self.stages_not_rerun
            .get_or_create(&labels)
            .inc_by(u64::from(resume.stages_not_rerun));
        self.resume_saved_seconds
            .get_or_create(&labels)
            .inc_by(resume.saved_ms as f64 / 1000.0);
    }

    /// Counts one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, after setting the database-wide gauges.
    pub fn render(
        &self,
        by_status: &std::collections::BTreeMap<String, u64>,
        blocked: u64,
        stuck: u64,
    ) -> anyhow::Result<String> {
        for status in BuildStatus::ALL {
            let count = by_status.get(status.as_str()).copied().unwrap_or(0);
            self.builds
                .get_or_create(&StatusLabels {
                    status: status.as_str().to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.blocked.set(i64::try_from(blocked).unwrap_or(i64::MAX));
        self.stuck.set(i64::try_from(stuck).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
