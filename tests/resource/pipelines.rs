//! Every example pipeline under `pipelines/concourse/` parses, and every `state-store` `source`,
//! `put` `params` and `get` `params` in it is valid for the resource's own schema, so the
//! examples cannot rot.

use std::collections::BTreeMap;
use std::path::Path;

use buildstate_resource::schema::{self, InParams, OutParams, Source};
use serde_norway::Value;

/// Names of the `state-store` resources of `pipeline`, each validated.
fn state_store_resources(file: &str, pipeline: &Value) -> BTreeMap<String, Source> {
    let types: Vec<&str> = pipeline["resource_types"]
        .as_sequence()
        .map(|types| types.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        types.contains(&"state-store"),
        "{file}: registers the state-store type"
    );
    let mut found = BTreeMap::new();
    for resource in pipeline["resources"].as_sequence().expect("resources") {
        if resource["type"].as_str() != Some("state-store") {
            continue;
        }
        let name = resource["name"].as_str().expect("name").to_owned();
        let source: Source = schema::parse(json(&resource["source"]))
            .unwrap_or_else(|error: String| panic!("{file}: resource `{name}`: {error}"));
        source
            .validate()
            .unwrap_or_else(|error| panic!("{file}: resource `{name}`: {error}"));
        found.insert(name, source);
    }
    found
}

fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).expect("YAML is JSON-compatible")
}

/// Walks every mapping in `value` and validates the `put`/`get` steps on `resources`.
fn steps(
    file: &str,
    value: &Value,
    resources: &BTreeMap<String, Source>,
    counts: &mut (usize, usize),
) {
    match value {
        Value::Mapping(map) => {
            for (verb, is_put) in [("put", true), ("get", false)] {
                let Some(step) = map.get(verb).and_then(Value::as_str) else {
                    continue;
                };
                let resource = map.get("resource").and_then(Value::as_str).unwrap_or(step);
                if !resources.contains_key(resource) {
                    continue;
                }
                let params = map
                    .get("params")
                    .map(json)
                    .unwrap_or(serde_json::Value::Null);
                let checked = if is_put {
                    counts.0 += 1;
                    schema::parse::<Option<OutParams>>(params.clone()).map(drop)
                } else {
                    counts.1 += 1;
                    schema::parse::<Option<InParams>>(params.clone()).map(drop)
                };
                if let Err(error) = checked {
                    panic!("{file}: `{verb}: {step}` params {params}: {error}");
                }
            }
            for (_, child) in map {
                steps(file, child, resources, counts);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                steps(file, item, resources, counts);
            }
        }
        _ => {}
    }
}

#[test]
fn every_example_pipeline_validates_against_the_resource_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/concourse");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("pipelines/concourse")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "the examples are there: {files:?}");
    for path in files {
        let file = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("?")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let pipeline: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|error| panic!("{file} is not YAML: {error}"));
        let resources = state_store_resources(&file, &pipeline);
        assert!(!resources.is_empty(), "{file}: has a state-store resource");
        let mut counts = (0, 0);
        steps(&file, &pipeline["jobs"], &resources, &mut counts);
        assert!(
            counts.0 + counts.1 > 0,
            "{file}: uses its state-store resource"
        );
    }
}

#[test]
fn a_broken_example_would_be_caught() {
    let resources: BTreeMap<String, Source> = [(
        "state-store".to_owned(),
        schema::parse(serde_json::json!({"api_url": "x", "token": "y", "platform": "aws", "image_type": "rhel8"}))
            .expect("source"),
    )]
    .into();
    for (why, yaml) in [
        (
            "a misspelled params key",
            "- put: state-store\n  params: {state: 5, stauts: failed}\n",
        ),
        (
            "an output key that is no variable name",
            "- put: state-store\n  params: {state: 5, status: completed, outputs: {ami-id: x}}\n",
        ),
    ] {
        let broken: Value = serde_norway::from_str(yaml).expect("yaml");
        let caught = std::panic::catch_unwind(|| steps("broken", &broken, &resources, &mut (0, 0)));
        assert!(caught.is_err(), "{why} fails the validation");
    }
}

/// The `get` steps of `jobs` with `trigger: true`, as (job, resource) pairs.
fn triggers(jobs: &Value) -> Vec<(String, String)> {
    fn walk(job: &str, value: &Value, found: &mut Vec<(String, String)>) {
        match value {
            Value::Mapping(map) => {
                if let (Some(step), Some(true)) = (
                    map.get("get").and_then(Value::as_str),
                    map.get("trigger").and_then(Value::as_bool),
                ) {
                    let resource = map.get("resource").and_then(Value::as_str).unwrap_or(step);
                    found.push((job.to_owned(), resource.to_owned()));
                }
                for (_, child) in map {
                    walk(job, child, found);
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    walk(job, item, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for job in jobs.as_sequence().expect("jobs") {
        let name = job["name"].as_str().expect("job name");
        walk(name, &job["plan"], &mut found);
    }
    found
}

#[test]
fn the_retries_example_retriggers_its_job_on_retry_due_of_the_line_it_reports_on() {
    // Arrange
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/concourse/retries.yml");
    let text = std::fs::read_to_string(&path).expect("pipelines/concourse/retries.yml");
    let pipeline: Value = serde_norway::from_str(&text).expect("YAML");
    let resources = state_store_resources("retries.yml", &pipeline);

    // Act: the resources that emit only `retry_due`, and the jobs they trigger.
    let retry_due: Vec<(&String, &Source)> = resources
        .iter()
        .filter(|(_, source)| {
            source
                .filter
                .as_ref()
                .is_some_and(|filter| filter.events == [buildstate_domain::EventKind::RetryDue])
        })
        .collect();
    let triggers = triggers(&pipeline["jobs"]);

    // Assert: one such resource, on the build line another resource reports on, and a job
    // that triggers on it and puts that line's stages.
    assert_eq!(retry_due.len(), 1, "one retry_due resource: {resources:?}");
    let (retry_name, retry_source) = retry_due[0];
    let reported = resources
        .iter()
        .find(|(name, source)| {
            *name != retry_name
                && source.filter.is_none()
                && source.platform == retry_source.platform
                && source.image_type == retry_source.image_type
                && source.key == retry_source.key
        })
        .map(|(name, _)| name.clone())
        .expect("a resource reports on the same build line");
    let job = triggers
        .iter()
        .find(|(_, resource)| resource == retry_name)
        .map(|(job, _)| job.clone())
        .expect("a job triggers on the retry_due resource");
    let job_text = serde_norway::to_string(
        pipeline["jobs"]
            .as_sequence()
            .expect("jobs")
            .iter()
            .find(|candidate| candidate["name"].as_str() == Some(job.as_str()))
            .expect("the job"),
    )
    .expect("YAML");
    assert!(
        job_text.contains(&format!("put: {reported}")),
        "job `{job}` reports on `{reported}`"
    );
}
