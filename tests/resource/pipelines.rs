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
