//! What the OpenAPI document needs beyond what utoipa derives from the handlers
//! and types, so that client generators get typed models: events as a `oneOf` of
//! flat objects with a `type` discriminator, `const` values, the webhook the hub
//! calls, and the problem answer any operation may give.
//!
//! These run as [`utoipa::Modify`]s on the derived document and panic if it does
//! not have the shape they expect: that is a build-time fault, and the test
//! comparing the committed document would catch a silent change anyway.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{Discriminator, Object, OneOf, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi, PathItem, Ref, RefOr, Required, Response,
    ResponseBuilder,
};
use utoipa::{Modify, ToSchema};

use super::problem::Problem;
use crate::webhooks::{MAX_ATTEMPTS, MAX_BATCH};

/// Turns the derived `Event` (an `allOf` of the envelope and the `EventKind`
/// `oneOf`, which generators cannot merge) into a `oneOf` of one flat object per
/// event type, named `<Type>Event` and discriminated by `type`.
pub struct EventUnion;

impl Modify for EventUnion {
    fn modify(&self, openapi: &mut OpenApi) {
        let schemas = &mut openapi
            .components
            .as_mut()
            .expect("the document has components")
            .schemas;
        let Some(RefOr::T(Schema::AllOf(event))) = schemas.remove("Event") else {
            panic!("Event derives as an allOf of its envelope and EventKind");
        };
        let Some(RefOr::T(Schema::OneOf(kinds))) = schemas.remove("EventKind") else {
            panic!("EventKind derives as a oneOf");
        };
        let envelope = event
            .items
            .iter()
            .find_map(|item| match item {
                RefOr::T(Schema::Object(envelope)) => Some(envelope.clone()),
                _ => None,
            })
            .expect("Event's allOf holds the envelope's object");
        let mut union = OneOf::new();
        union.description = event.description;
        union.example = event.example;
        let mut mapping = BTreeMap::new();
        for kind in kinds.items {
            let RefOr::T(Schema::Object(kind)) = kind else {
                panic!("each EventKind variant derives as an object");
            };
            let type_name = type_name(&kind);
            let schema_name = format!("{}Event", pascal_case(&type_name));
            let mut variant = envelope.clone();
            variant.title = Some(schema_name.clone());
            variant.description = kind.description;
            for (property, schema) in kind.properties {
                let schema = if property == "type" {
                    RefOr::T(constant(Type::String, json!(type_name), None))
                } else {
                    schema
                };
                variant.properties.insert(property, schema);
            }
            for property in kind.required {
                if !variant.required.contains(&property) {
                    variant.required.push(property);
                }
            }
            union.items.push(Ref::from_schema_name(&schema_name).into());
            mapping.insert(type_name, format!("#/components/schemas/{schema_name}"));
            schemas.insert(schema_name, Schema::Object(variant).into());
        }
        let mut discriminator = Discriminator::new("type");
        discriminator.mapping = mapping;
        union.discriminator = Some(discriminator);
        schemas.insert("Event".into(), Schema::OneOf(union).into());
    }
}

/// The one value of a variant's `type` enum.
fn type_name(kind: &Object) -> String {
    let Some(RefOr::T(Schema::Object(tag))) = kind.properties.get("type") else {
        panic!("each EventKind variant has a `type` property");
    };
    tag.enum_values
        .as_ref()
        .and_then(|values| values.first())
        .and_then(Value::as_str)
        .expect("`type` is a one-value string enum")
        .to_owned()
}

/// `client.named` as `ClientNamed`.
fn pascal_case(dotted: &str) -> String {
    dotted
        .split(['.', '_'])
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// A schema that admits only `value` (utoipa derives no `const`).
fn constant(schema_type: Type, value: Value, description: Option<String>) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(schema_type)
        .description(description)
        .build();
    object.extensions = Some(Extensions::from_iter([("const", value)]));
    Schema::Object(object)
}

/// Marks the fields that always hold the same value as `const`.
pub struct Constants;

impl Modify for Constants {
    fn modify(&self, openapi: &mut OpenApi) {
        let schemas = &mut openapi
            .components
            .as_mut()
            .expect("the document has components")
            .schemas;
        for (schema, property, schema_type, value) in [
            ("Acked", "acked", Type::Boolean, json!(true)),
            ("EventsMissed", "type", Type::String, json!("events.missed")),
        ] {
            let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema) else {
                panic!("{schema} derives as an object");
            };
            let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property) else {
                panic!("{schema} has the property {property}");
            };
            let description = field.description.take();
            *field = match constant(schema_type, value, description) {
                Schema::Object(field) => field,
                _ => unreachable!("constant builds an object"),
            };
        }
    }
}

/// Gives every operation a `default` problem answer: an unknown path is 404
/// `not_found`, a method the path does not take 405 `method_not_allowed`, and a
/// fault in the hub 500 `internal`.
pub struct DefaultProblem;

impl Modify for DefaultProblem {
    fn modify(&self, openapi: &mut OpenApi) {
        let answer = problem_response(
            "Any other problem: `not_found` (404, no such path), \
             `method_not_allowed` (405), `internal` (500)",
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                operation
                    .responses
                    .responses
                    .entry("default".into())
                    .or_insert_with(|| answer.clone().into());
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build(),
        )
        .build()
}

/// Documents the POST each `--webhook-url` receives, in the document's
/// `webhooks` (utoipa 5 has no field for it, so it goes in as an extension).
pub struct Webhook;

impl Modify for Webhook {
    fn modify(&self, openapi: &mut OpenApi) {
        let signature = ParameterBuilder::new()
            .name("X-Tcphub-Signature")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "With `--webhook-secret`: `sha256=` and the lowercase hex HMAC-SHA256 of \
                 the raw body under the secret; absent without one",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^sha256=[0-9a-f]{64}$")),
            ))
            .build();
        let batch = RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("EventBatch")))
                    .build(),
            )
            .build();
        let operation = OperationBuilder::new()
            .operation_id(Some("receive_events"))
            .tag("events")
            .summary(Some(
                "Batches of hub events, POSTed to each `--webhook-url`",
            ))
            .description(Some(format!(
                "Every event, in order, in batches of up to {MAX_BATCH}: what accumulated \
                 while the previous POST was out. Any 2xx answer delivers the batch. \
                 Network errors, timeouts, 408, 429 and 5xx are retried with the same body \
                 and signature, with exponential backoff, up to {MAX_ATTEMPTS} attempts; \
                 other answers drop the batch."
            )))
            .parameter(signature)
            .request_body(Some(batch))
            .response(
                "2XX",
                ResponseBuilder::new().description("Delivered").build(),
            )
            .response(
                "default",
                ResponseBuilder::new()
                    .description(
                        "Not delivered: 408, 429 and 5xx are retried, others drop the batch",
                    )
                    .build(),
            )
            // The hub sends no bearer token; the signature authenticates it.
            .security(SecurityRequirement::default())
            .build();
        let webhooks = json!({ "events": PathItem::new(HttpMethod::Post, operation) });
        openapi
            .extensions
            .get_or_insert_with(Extensions::default)
            .insert("webhooks".into(), webhooks);
    }
}
