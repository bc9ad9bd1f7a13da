//! What the `api` target sends, read from the server's OpenAPI document:
//! every operation under `/api/` that the harness can authenticate, with its
//! path and query parameters and its JSON body's fields, each given the value
//! generator its schema and name call for. A new endpoint is fuzzed as soon
//! as it is documented.
//!
//! Left out, by rule: operations outside `/api/` (operators' `/health`,
//! `/status`, `/metrics`), protocol upgrades (a `101` and no 2xx reply), and
//! operations whose `security` names only credentials the harness does not
//! hold (the agent's WebSocket takes a connection's API key, which the
//! harness's own agent uses; the `wire` target fuzzes what it carries). A
//! `DELETE` whose path names no object removes the caller's own (the
//! organisation): it is sent only with credentials that do not work.
//!
//! Each operation keeps the error codes the document declares for it (each
//! error response's `x-error-codes`), and the plan those any operation may
//! answer (`x-error-codes-any-operation`), so the target can tell an error
//! the document does not list.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Where the server serves its OpenAPI document.
pub(crate) const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// The API's paths start with this; the rest are operators' endpoints.
const API_PREFIX: &str = "/api/";
/// The methods a path item may hold, as the document spells them.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
/// `$ref` chains and nested `allOf` deeper than this are cut (a schema may
/// refer to itself).
const MAX_DEPTH: usize = 16;

/// How the target generates a value, chosen from the schema and the name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field {
    /// An email (`email`, `*_email`, format `email`): the owner's, new
    /// unique ones, random and odd ones.
    Email,
    /// A password the owner has now (`current_password`, `old_password`).
    CurrentPassword,
    /// A password to set (`new_password`): strong, weak, the current one.
    NewPassword,
    /// Either (`password`: signing up or signing in).
    Password,
    /// A person's or a thing's name (`name`, `*_name`).
    Name,
    /// A one-time token (`token`, `*_token`).
    Token,
    /// A member's role (`role`, `*_role`) when the document lists no values.
    Role,
    /// A boolean.
    Bool,
    /// The id of a live object of this resource (`connection`, `query`,
    /// `member`, `invitation`, ...): a path parameter or `<resource>_id`.
    Id(String),
    /// A question about the shop database (`question`).
    Question,
    /// A database type (`db_type`) when the document lists no values.
    DbType,
    /// Business instructions for the prompt (`instructions`).
    Instructions,
    /// One of the values the document lists (`enum`).
    Enum(Vec<Value>),
    /// An integer within the documented bounds.
    Integer {
        /// The documented `minimum`.
        minimum: Option<i64>,
        /// The documented `maximum`.
        maximum: Option<i64>,
    },
    /// Any number.
    Number,
    /// Any other string.
    Text,
    /// Any JSON: arrays, objects, values of no documented type.
    Json,
}

/// A field's generator with what its schema adds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    /// The generator.
    pub(crate) field: Field,
    /// The documented `maxLength`: lengths around it are tried.
    pub(crate) max_length: Option<usize>,
    /// Whether `null` is a documented value.
    pub(crate) nullable: bool,
}

/// A body field or a parameter of an operation.
#[derive(Clone, Debug)]
pub struct ApiField {
    pub(crate) name: String,
    pub(crate) required: bool,
    pub(crate) spec: Spec,
}

impl ApiField {
    /// The field's or the parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the document marks it required (path parameters always are).
    pub fn required(&self) -> bool {
        self.required
    }

    /// The resource whose live objects fill it (`connection` for a
    /// connection's `{id}`), or `""` when it is not an id.
    pub fn resource(&self) -> &str {
        match &self.spec.field {
            Field::Id(resource) => resource,
            _ => "",
        }
    }
}

/// One operation of the document, as the `api` target sends it.
#[derive(Clone, Debug)]
pub struct ApiOperation {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) needs_auth: bool,
    pub(crate) json_body: bool,
    pub(crate) fields: Vec<ApiField>,
    pub(crate) path_params: Vec<ApiField>,
    pub(crate) query_params: Vec<ApiField>,
    /// A live event feed: it answers `text/event-stream` to a request
    /// without a body, and does not end by itself.
    pub(crate) feed: bool,
    /// A `DELETE` of the caller's own (its path names no object).
    pub(crate) removes_caller: bool,
    /// The error codes the document declares, by HTTP status.
    pub(crate) errors: BTreeMap<u16, BTreeSet<String>>,
}

impl ApiOperation {
    /// The method, upper case (`POST`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The document's path template (`/api/v1/connections/{id}`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the operation's `security` asks for the user's bearer token.
    pub fn needs_auth(&self) -> bool {
        self.needs_auth
    }

    /// Whether it takes a JSON request body.
    pub fn json_body(&self) -> bool {
        self.json_body
    }

    /// The JSON body's fields (empty without a body).
    pub fn fields(&self) -> &[ApiField] {
        &self.fields
    }

    /// The path parameters, each filled from the live objects of its resource.
    pub fn path_params(&self) -> &[ApiField] {
        &self.path_params
    }

    /// The query parameters.
    pub fn query_params(&self) -> &[ApiField] {
        &self.query_params
    }

    /// Whether it is sent only with credentials that do not work (a `DELETE`
    /// whose path names no object removes the caller's own organisation).
    pub fn only_without_credentials(&self) -> bool {
        self.removes_caller
    }

    /// `METHOD path`, as reports name it.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The error codes the document declares for `status` (its response's
    /// `x-error-codes`; none when the status has no response).
    pub fn declared_errors(&self, status: u16) -> impl Iterator<Item = &str> {
        self.errors.get(&status).into_iter().flatten().map(String::as_str)
    }
}

/// An operation of the document that the target leaves out, and why.
#[derive(Clone, Debug)]
pub struct SkippedOperation {
    /// The method, upper case.
    pub method: String,
    /// The path template.
    pub path: String,
    /// Why it is not fuzzed.
    pub reason: String,
}

/// What the `api` target fuzzes of an OpenAPI document.
#[derive(Clone, Debug)]
pub struct ApiPlan {
    /// The operations it sends, in the document's order.
    pub operations: Vec<ApiOperation>,
    /// The operations it leaves out.
    pub skipped: Vec<SkippedOperation>,
    /// The codes any operation may answer besides its own (the connection
    /// refused, a late or oversized body): `x-error-codes-any-operation`.
    pub any_operation_errors: BTreeSet<String>,
}

impl ApiPlan {
    /// Reads the plan from an OpenAPI 3 document (JSON). Every operation of
    /// the document is either in [`ApiPlan::operations`] or, with its reason,
    /// in [`ApiPlan::skipped`].
    pub fn from_document(document: &Value) -> Result<ApiPlan, String> {
        let paths = document
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("the document has no `paths` object")?;
        let held = held_schemes(document);
        let any_operation_errors = codes(&document["x-error-codes-any-operation"]);
        let mut plan =
            ApiPlan { operations: Vec::new(), skipped: Vec::new(), any_operation_errors };
        for (path, item) in paths {
            let Some(item) = resolve(document, item).as_object() else {
                continue;
            };
            let shared = item.get("parameters");
            for method in METHODS {
                let Some(op) = item.get(method) else {
                    continue;
                };
                let method = method.to_uppercase();
                match operation(document, &held, path, &method, op, shared) {
                    Ok(op) => plan.operations.push(op),
                    Err(reason) => {
                        plan.skipped.push(SkippedOperation { method, path: path.clone(), reason });
                    }
                }
            }
        }
        Ok(plan)
    }

    /// The operations with a JSON body.
    pub fn json_body_operations(&self) -> usize {
        self.operations.iter().filter(|op| op.json_body).count()
    }

    /// Whether the document lists `code` for `status` on `op`, or among the
    /// codes any operation may answer.
    pub fn declares(&self, op: &ApiOperation, status: u16, code: &str) -> bool {
        op.declared_errors(status).any(|c| c == code) || self.any_operation_errors.contains(code)
    }
}

/// The names in a list of codes (an `x-error-codes`), none when it is not one.
fn codes(list: &Value) -> BTreeSet<String> {
    list.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The security schemes whose credential the harness holds: a bearer JWT,
/// the `access_token` that logging in returns.
fn held_schemes(document: &Value) -> BTreeSet<String> {
    let Some(schemes) = document.pointer("/components/securitySchemes").and_then(Value::as_object)
    else {
        return BTreeSet::new();
    };
    schemes
        .iter()
        .filter(|(_, scheme)| {
            let scheme = resolve(document, scheme);
            scheme["type"] == "http"
                && scheme["scheme"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
                && scheme["bearerFormat"] == "JWT"
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// One operation, or why it is left out.
fn operation(
    document: &Value,
    held: &BTreeSet<String>,
    path: &str,
    method: &str,
    op: &Value,
    shared: Option<&Value>,
) -> Result<ApiOperation, String> {
    if !path.starts_with(API_PREFIX) {
        return Err(format!("outside {API_PREFIX} (an operators' endpoint)"));
    }
    let responses = op.get("responses").and_then(Value::as_object);
    let successes: Vec<&Value> = responses
        .into_iter()
        .flatten()
        .filter(|(status, _)| status.starts_with('2'))
        .map(|(_, response)| resolve(document, response))
        .collect();
    let needs_auth = needs_auth(document, held, op)?;
    if successes.is_empty() && responses.is_some_and(|r| r.contains_key("101")) {
        return Err("a protocol upgrade (101), not an HTTP exchange".to_owned());
    }

    let mut query_params = Vec::new();
    let parameters = [shared, op.get("parameters")];
    for parameter in parameters.into_iter().flatten().filter_map(Value::as_array).flatten() {
        let parameter = resolve(document, parameter);
        let (Some(name), Some(place)) = (parameter["name"].as_str(), parameter["in"].as_str())
        else {
            continue;
        };
        // Header and cookie parameters are not fuzzed; path parameters come
        // from the template below, so that none is missed.
        if place != "query" {
            continue;
        }
        let spec = match parameter.get("schema") {
            Some(schema) => spec(document, name, schema),
            None => plain(string_field(name, None)),
        };
        let required = parameter["required"].as_bool().unwrap_or(false);
        query_params.retain(|p: &ApiField| p.name != name);
        query_params.push(ApiField { name: name.to_owned(), required, spec });
    }
    let path_params: Vec<ApiField> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| ApiField {
            name: name.to_owned(),
            required: true,
            spec: plain(Field::Id(resource_of_param(path, name))),
        })
        .collect();

    let (json_body, fields) = match op.get("requestBody") {
        None => (false, Vec::new()),
        Some(body) => {
            let content = resolve(document, body)["content"].as_object().ok_or_else(|| {
                "its request body has no `content`: the harness cannot tell what to send".to_owned()
            })?;
            let json = content.iter().find(|(media, _)| {
                media.starts_with("application/json") || media.ends_with("+json")
            });
            let Some((_, media)) = json else {
                let types: Vec<&str> = content.keys().map(String::as_str).collect();
                return Err(format!("a request body of {}, not JSON", types.join(", ")));
            };
            let schema = media.get("schema").ok_or_else(|| {
                "its JSON request body has no schema: the harness cannot tell what to send"
                    .to_owned()
            })?;
            (true, object_fields(document, schema))
        }
    };
    let errors = responses
        .into_iter()
        .flatten()
        .filter_map(|(status, response)| {
            let status = status.parse::<u16>().ok().filter(|s| *s >= 400)?;
            Some((status, codes(&resolve(document, response)["x-error-codes"])))
        })
        .collect();
    let feed = !json_body
        && successes.iter().any(|response| {
            response["content"]
                .as_object()
                .is_some_and(|c| c.keys().any(|media| media.starts_with("text/event-stream")))
        });
    Ok(ApiOperation {
        method: method.to_owned(),
        path: path.to_owned(),
        needs_auth,
        json_body,
        fields,
        path_params: path_params.clone(),
        query_params,
        feed,
        removes_caller: method == "DELETE" && path_params.is_empty(),
        errors,
    })
}

/// Whether the operation needs the harness's bearer token (`security`, or
/// the document's default); `Err` when it needs a credential the harness
/// does not hold.
fn needs_auth(document: &Value, held: &BTreeSet<String>, op: &Value) -> Result<bool, String> {
    let Some(requirements) =
        op.get("security").or_else(|| document.get("security")).and_then(Value::as_array)
    else {
        return Ok(false);
    };
    let alternatives: Vec<&serde_json::Map<String, Value>> =
        requirements.iter().filter_map(Value::as_object).collect();
    // No requirement, or an empty one (`{}`): the credential is optional.
    if alternatives.is_empty() || alternatives.iter().any(|a| a.is_empty()) {
        return Ok(false);
    }
    if alternatives.iter().any(|a| a.keys().all(|scheme| held.contains(scheme))) {
        return Ok(true);
    }
    let names: BTreeSet<&str> =
        alternatives.iter().flat_map(|a| a.keys()).map(String::as_str).collect();
    Err(format!(
        "needs {}: a credential the harness does not hold",
        names.into_iter().collect::<Vec<_>>().join(" or ")
    ))
}

/// The resource a path parameter names: the segment before `{id}`, or the
/// name without `_id` (`{user_id}`), in the singular.
fn resource_of_param(path: &str, param: &str) -> String {
    if let Some(prefix) = param.strip_suffix("_id") {
        return singular(prefix);
    }
    let placeholder = format!("{{{param}}}");
    let segments: Vec<&str> = path.split('/').collect();
    segments
        .iter()
        .position(|s| *s == placeholder)
        .and_then(|at| at.checked_sub(1))
        .map_or_else(|| singular(param), |at| singular(segments[at]))
}

/// The resource whose object a reply to `path` describes: the segment before
/// the last parameter (`/connections/{id}/schema`), or the last segment
/// (`POST /api/v1/connections`).
pub(crate) fn resource_of_reply(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last_param = segments.iter().rposition(|s| s.starts_with('{'));
    let at = match last_param {
        Some(at) => at.checked_sub(1),
        None => segments.len().checked_sub(1),
    };
    at.map(|at| singular(segments[at])).unwrap_or_default()
}

/// `connections` -> `connection`, `queries` -> `query`.
pub(crate) fn singular(word: &str) -> String {
    let word = word.to_ascii_lowercase();
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if word.ends_with('s') && !word.ends_with("ss") {
        word[..word.len() - 1].to_owned()
    } else {
        word
    }
}

/// `value`, with `$ref`s followed inside the document.
fn resolve<'d>(document: &'d Value, value: &'d Value) -> &'d Value {
    let mut value = value;
    for _ in 0..MAX_DEPTH {
        let target = value
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| document.pointer(pointer));
        match target {
            Some(target) => value = target,
            None => break,
        }
    }
    value
}

/// The fields of an object schema: its properties, those of every `allOf`
/// part, and those of any `oneOf`/`anyOf` variant (never required).
fn object_fields(document: &Value, schema: &Value) -> Vec<ApiField> {
    let mut properties: Vec<(String, &Value)> = Vec::new();
    let mut required = BTreeSet::new();
    collect_properties(document, schema, true, 0, &mut properties, &mut required);
    properties
        .into_iter()
        .map(|(name, schema)| ApiField {
            required: required.contains(&name),
            spec: spec(document, &name, schema),
            name,
        })
        .collect()
}

fn collect_properties<'d>(
    document: &'d Value,
    schema: &'d Value,
    binding: bool,
    depth: usize,
    properties: &mut Vec<(String, &'d Value)>,
    required: &mut BTreeSet<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = resolve(document, schema);
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            collect_properties(document, part, binding, depth + 1, properties, required);
        }
    }
    for key in ["oneOf", "anyOf"] {
        for part in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            collect_properties(document, part, false, depth + 1, properties, required);
        }
    }
    if let Some(own) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in own {
            if !properties.iter().any(|(n, _)| n == name) {
                properties.push((name.clone(), property));
            }
        }
    }
    if binding {
        let names = schema.get("required").and_then(Value::as_array).into_iter().flatten();
        required.extend(names.filter_map(Value::as_str).map(str::to_owned));
    }
}

fn plain(field: Field) -> Spec {
    Spec { field, max_length: None, nullable: false }
}

/// The generator for a value named `name` of this schema: its `enum`, its
/// type, then (for strings) its `format` and its name.
fn spec(document: &Value, name: &str, schema: &Value) -> Spec {
    let mut schema = resolve(document, schema);
    let mut nullable = false;
    // `Option<T>` of a named type: `oneOf: [{"type": "null"}, {"$ref": ...}]`.
    if let Some(variants) =
        schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array)
    {
        let (nulls, others): (Vec<&Value>, Vec<&Value>) =
            variants.iter().map(|v| resolve(document, v)).partition(|v| v["type"] == "null");
        if let [only] = others.as_slice() {
            nullable = !nulls.is_empty();
            schema = *only;
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    nullable |= types.contains(&"null");
    let primary = types.iter().copied().find(|t| *t != "null");
    let values: Vec<Value> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| {
            nullable |= values.contains(&Value::Null);
            values.iter().filter(|v| !v.is_null()).cloned().collect()
        })
        .unwrap_or_default();
    let max_length =
        schema.get("maxLength").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok());
    let field = if !values.is_empty() {
        Field::Enum(values)
    } else {
        match primary {
            Some("boolean") => Field::Bool,
            Some("integer") => Field::Integer {
                minimum: schema.get("minimum").and_then(Value::as_i64),
                maximum: schema.get("maximum").and_then(Value::as_i64),
            },
            Some("number") => Field::Number,
            Some("string") => string_field(name, schema.get("format").and_then(Value::as_str)),
            _ => Field::Json,
        }
    };
    Spec { field, max_length, nullable }
}

/// A string's generator, by its `format` and then its name.
fn string_field(name: &str, format: Option<&str>) -> Field {
    let name = name.to_ascii_lowercase();
    let is = |word: &str| name == word || name.ends_with(&format!("_{word}"));
    if format == Some("email") || is("email") {
        Field::Email
    } else if name.contains("password") {
        if name.contains("new") {
            Field::NewPassword
        } else if name.contains("current") || name.contains("old") {
            Field::CurrentPassword
        } else {
            Field::Password
        }
    } else if is("token") {
        Field::Token
    } else if is("role") {
        Field::Role
    } else if is("id") {
        Field::Id(name.strip_suffix("_id").map(singular).unwrap_or_default())
    } else if name == "question" {
        Field::Question
    } else if name == "instructions" {
        Field::Instructions
    } else if name == "db_type" {
        Field::DbType
    } else if is("name") {
        Field::Name
    } else {
        Field::Text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A document of one path with `item` as its path item.
    fn document(path: &str, item: Value) -> Value {
        json!({
            "openapi": "3.1.0",
            "paths": {path: item},
            "components": {
                "securitySchemes": {
                    "access_token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "agent_api_key": {"type": "http", "scheme": "bearer", "bearerFormat": "custard_..."}
                },
                "schemas": {
                    "Body": {
                        "type": "object",
                        "required": ["email", "role"],
                        "properties": {
                            "email": {"type": "string"},
                            "role": {"type": "string", "enum": ["owner", "member"]},
                            "note": {"type": ["string", "null"], "maxLength": 10},
                            "connection_id": {"type": "string"},
                            "count": {"type": "integer", "minimum": 0}
                        }
                    }
                }
            }
        })
    }

    fn only(document: &Value) -> Result<ApiOperation, String> {
        let plan = ApiPlan::from_document(document)?;
        match (plan.operations.as_slice(), plan.skipped.as_slice()) {
            ([op], []) => Ok(op.clone()),
            ([], [skipped]) => Err(skipped.reason.clone()),
            _ => panic!("one operation expected: {plan:?}"),
        }
    }

    #[test]
    fn a_json_body_is_read_from_its_schema() {
        let doc = document(
            "/api/v1/things/{id}",
            json!({"post": {
                "security": [{"access_token": []}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Body"}}}},
                "responses": {"200": {"description": "ok"}}
            }}),
        );
        let op = only(&doc).expect("fuzzed");
        assert!(op.needs_auth && op.json_body && !op.removes_caller && !op.feed);
        let mut fields: Vec<(&str, bool, &Spec)> =
            op.fields.iter().map(|f| (f.name(), f.required(), &f.spec)).collect();
        fields.sort_by_key(|f| f.0);
        assert_eq!(
            fields,
            [
                ("connection_id", false, &plain(Field::Id("connection".to_owned()))),
                ("count", false, &plain(Field::Integer { minimum: Some(0), maximum: None })),
                ("email", true, &plain(Field::Email)),
                ("note", false, &Spec { field: Field::Text, max_length: Some(10), nullable: true }),
                ("role", true, &plain(Field::Enum(vec![json!("owner"), json!("member")]))),
            ]
        );
        assert_eq!(op.path_params[0].spec, plain(Field::Id("thing".to_owned())));
    }

    #[test]
    fn what_is_left_out_says_why() {
        let socket =
            json!({"get": {"security": [{"agent_api_key": []}], "responses": {"101": {}}}});
        let reason = only(&document("/api/v1/ws/{id}", socket)).expect_err("left out");
        assert_eq!(reason, "needs agent_api_key: a credential the harness does not hold");
        let upgrade =
            json!({"get": {"security": [{"access_token": []}], "responses": {"101": {}}}});
        let reason = only(&document("/api/v1/ws", upgrade)).expect_err("left out");
        assert_eq!(reason, "a protocol upgrade (101), not an HTTP exchange");
        let health = json!({"get": {"responses": {"200": {}}}});
        assert!(only(&document("/health", health)).is_err());
        let form = json!({"post": {"requestBody": {"content": {"multipart/form-data": {}}}, "responses": {"200": {}}}});
        let reason = only(&document("/api/v1/upload", form)).expect_err("left out");
        assert_eq!(reason, "a request body of multipart/form-data, not JSON");
    }

    #[test]
    fn rules_come_from_the_operation() {
        let delete =
            json!({"delete": {"security": [{"access_token": []}], "responses": {"204": {}}}});
        assert!(only(&document("/api/v1/org", delete.clone())).expect("fuzzed").removes_caller);
        assert!(!only(&document("/api/v1/org/{id}", delete)).expect("fuzzed").removes_caller);
        let feed = json!({"get": {"responses": {"200": {"content": {"text/event-stream": {}}}}}});
        let op = only(&document("/api/v1/events", feed)).expect("fuzzed");
        assert!(op.feed && !op.needs_auth);
        let optional =
            json!({"get": {"security": [{}, {"access_token": []}], "responses": {"200": {}}}});
        assert!(!only(&document("/api/v1/maybe", optional)).expect("fuzzed").needs_auth);
    }

    #[test]
    fn declared_errors_come_from_the_document() {
        let mut doc = document(
            "/api/v1/things/{id}",
            json!({"get": {"responses": {
                "200": {"description": "ok"},
                "404": {"description": "gone", "x-error-codes": ["not_found"]},
                "422": {"description": "bad", "x-error-codes": ["validation_error", "query_failed"]}
            }}}),
        );
        doc["x-error-codes-any-operation"] = json!(["request_timeout"]);
        let plan = ApiPlan::from_document(&doc).expect("a plan");
        let op = &plan.operations[0];
        let check = |status: u16, code: &str, want: bool| {
            assert_eq!(plan.declares(op, status, code), want, "{status} {code}");
        };
        check(404, "not_found", true);
        check(422, "query_failed", true);
        check(422, "not_found", false);
        check(500, "internal", false);
        check(408, "request_timeout", true);
        assert_eq!(op.declared_errors(200).count(), 0);
    }

    #[test]
    fn resources_and_names() {
        let check = |path: &str, param: &str, want: &str| {
            assert_eq!(resource_of_param(path, param), want, "{path} {param}");
        };
        check("/api/v1/connections/{id}/rotate-key", "id", "connection");
        check("/api/v1/queries/{id}", "id", "query");
        check("/api/v1/org/members/{user_id}", "user_id", "user");
        assert_eq!(resource_of_reply("/api/v1/query"), "query");
        assert_eq!(resource_of_reply("/api/v1/org/invitations"), "invitation");
        assert_eq!(resource_of_reply("/api/v1/org/invitations/{id}/resend"), "invitation");
        let check = |name: &str, want: Field| assert_eq!(string_field(name, None), want, "{name}");
        check("current_password", Field::CurrentPassword);
        check("new_password", Field::NewPassword);
        check("password", Field::Password);
        check("invitation_token", Field::Token);
        check("organization_name", Field::Name);
        check("conversation_id", Field::Id("conversation".to_owned()));
        check("outcome", Field::Text);
        assert_eq!(string_field("contact", Some("email")), Field::Email);
    }
}
