//! What the OpenAPI document says beyond each handler's own annotations: the answers every
//! operation of a shape can give (they come from the shared extractors, not the handler), the
//! spelling of the links the handlers declare (which let a client — or a stateful fuzzer — walk
//! from a created build or token to what can be done with it), and what utoipa's attributes
//! cannot say (cross-field rules, the event streams' items).

use serde_json::{json, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::Modify;

/// Adds the answers of the shared extractors to every operation they apply to:
/// - a bearer token: 401 (no token, or an unknown, revoked or expired one), and 403 where the
///   operation needs more than `read` scope;
/// - a JSON body: 400 (not JSON), 413 (over the size limit), 415 (not `application/json`) and
///   422 (a field broke a rule);
/// - query parameters: 400 (an unknown parameter, or not of the parameter's type) and 422 (a
///   value broke a rule);
/// - a path id: 404 (no such resource; a malformed id cannot exist);
/// - a bearer token, again: 429 with `Retry-After` (too many failed authentications from the
///   address; on writes also too many writes with the token; `crate::ratelimit`).
///
/// An answer a handler documents itself keeps its own description.
#[derive(Debug)]
pub struct StandardAnswers;

impl Modify for StandardAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, writes) in operations {
                if let Some(operation) = operation {
                    add_standard_answers(operation, writes);
                }
            }
        }
    }
}

/// `writes`: the operation changes state, so the per-token write limit applies too.
fn add_standard_answers(operation: &mut Operation, writes: bool) {
    let mut answers: Vec<(&str, &str)> = Vec::new();
    let scopes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| serde_json::from_value::<Vec<String>>(value["bearer"].clone()).ok())
        .flatten()
        .collect();
    if operation.security.is_some() {
        answers.push((
            "401",
            "no bearer token, or an unknown, revoked or expired one",
        ));
        if scopes.iter().any(|scope| scope != "read") {
            answers.push(("403", "the token's scope is too narrow for this"));
        }
    }
    if operation.request_body.is_some() {
        answers.push(("400", "the body is not JSON"));
        answers.push(("413", "the body is larger than the limit"));
        answers.push(("415", "the body is not `application/json`"));
        answers.push(("422", "a field broke a rule; `field` names it"));
    }
    let parameters = operation.parameters.iter().flatten();
    let (mut query, mut path) = (false, false);
    for parameter in parameters {
        match parameter.parameter_in {
            ParameterIn::Query => query = true,
            ParameterIn::Path => path = true,
            _ => {}
        }
    }
    if query {
        answers.push(("400", "an unknown query parameter, or one not of its type"));
        answers.push(("422", "a parameter broke a rule; `field` names it"));
    }
    if path {
        answers.push(("404", "no such resource"));
    }
    if operation.security.is_some() {
        let responses = &mut operation.responses.responses;
        if !responses.contains_key("429") {
            let description = if writes {
                "a rate limit: too many failed authentications from this address, or too many \
                 writes with this token; `Retry-After` says when to try again"
            } else {
                "a rate limit: too many failed authentications from this address; `Retry-After` \
                 says when to try again"
            };
            responses.insert("429".to_owned(), rate_limited_answer(description));
        }
    }
    for (status, description) in answers {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_answer(description));
    }
}

fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn rate_limited_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    let seconds = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(1))
        .build();
    ResponseBuilder::new()
        .description(description)
        .header(
            "Retry-After",
            utoipa::openapi::header::HeaderBuilder::new()
                .schema(seconds)
                .description(Some("seconds to wait before trying again"))
                .build(),
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Spells each response link's fields as OpenAPI does. The links are declared with their
/// routes (`links(...)` in `#[utoipa::path]`), but utoipa's `Link` (as of 5.5) serializes
/// `operation_id`, `operation_ref` and `request_body` in snake case, which no client reads: each
/// is moved to its `operationId`, `operationRef` or `requestBody` key (through the link's
/// extensions, which serialize as written).
#[derive(Debug)]
pub struct LinkSpelling;

impl Modify for LinkSpelling {
    fn modify(&self, openapi: &mut OpenApi) {
        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
        });
        for operation in operations.flatten() {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                for link in response.links.values_mut() {
                    if let RefOr::T(link) = link {
                        spell_link(link);
                    }
                }
            }
        }
    }
}

fn spell_link(link: &mut Link) {
    let mut spelled: Vec<(&str, Value)> = Vec::new();
    if !link.operation_id.is_empty() {
        spelled.push(("operationId", std::mem::take(&mut link.operation_id).into()));
    }
    if !link.operation_ref.is_empty() {
        spelled.push((
            "operationRef",
            std::mem::take(&mut link.operation_ref).into(),
        ));
    }
    if let Some(body) = link.request_body.take() {
        spelled.push(("requestBody", body));
    }
    if spelled.is_empty() {
        return;
    }
    let extensions = link.extensions.get_or_insert_with(Extensions::default);
    for (key, value) in spelled {
        extensions.insert(key.to_owned(), value);
    }
}

/// Adds the rules that tie one field to another, which utoipa's derives cannot say:
/// - a report carries `outputs` only with `status: completed`;
/// - a heartbeat or release names its run (`run`) or gives its lease's `fence`.
pub fn add_cross_field_rules(document: &mut Value) {
    let schemas = document.pointer_mut("/components/schemas");
    let Some(schemas) = schemas.and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(report) = schemas
        .get_mut("ReportTransition")
        .and_then(Value::as_object_mut)
    {
        report.insert(
            "if".to_owned(),
            json!({ "properties": { "status": { "not": { "const": "completed" } } } }),
        );
        report.insert(
            "then".to_owned(),
            json!({ "properties": { "outputs": { "maxProperties": 0 } } }),
        );
    }
    if let Some(lease) = schemas
        .get_mut("LeaseRequest")
        .and_then(Value::as_object_mut)
    {
        lease.insert(
            "anyOf".to_owned(),
            json!([
                { "required": ["run"], "properties": { "run": { "type": "string" } } },
                { "required": ["fence"], "properties": { "fence": { "type": "integer" } } },
            ]),
        );
    }
}

/// Describes the body of the server-sent event streams truthfully. On the wire the body is text
/// (`text/event-stream`), so its `schema` stays a string; what each event carries is said by
/// `x-itemSchema`: shaped as OpenAPI 3.2's `itemSchema` (made for `text/event-stream`), under
/// an extension name because this is a 3.1 document, where a media type allows no other field.
/// `event` is always `transition`, `id` is the resume point, and `data` is a string of JSON
/// (`contentMediaType`) whose shape is the `BuildEvent` schema (`contentSchema`).
pub fn describe_event_streams(document: &mut Value) {
    let item = json!({
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"const": "transition"},
            "id": {"type": "string", "description": "send it back as `Last-Event-ID` to resume after this event"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/BuildEvent"},
            },
        },
    });
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item_of_path in paths.values_mut() {
        let Some(stream) = item_of_path
            .pointer_mut("/get/responses/200/content/text~1event-stream")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        stream.insert(
            "schema".to_owned(),
            json!({
                "type": "string",
                "description": "server-sent events, each `event: transition`, `id: …` and `data: …` (see `x-itemSchema`), with `:` comment lines that keep the connection open",
            }),
        );
        stream.insert("x-itemSchema".to_owned(), item.clone());
    }
}
