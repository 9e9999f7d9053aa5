//! The HTTP API: routes, handlers and their JSON. Every handler checks
//! what it is given, waits for its turn ([`State::admit`]) and runs the
//! guest on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::logging::note;
use super::{auth, quota, random_id, ApiError, State};
use crate::session::{CallError, CallErrorKind, Value};
use crate::{Input, Limits, MountSpec, Output};

type Shared = axum::extract::State<Arc<State>>;

pub(super) fn router(state: Arc<State>) -> Router {
    let max_body = state.config.max_body;
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.config.metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .route("/v1/run", post(run))
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}", axum::routing::delete(delete_session))
        .route("/v1/sessions/{id}/exec", post(exec))
        .route("/v1/sessions/{id}/eval", post(eval))
        .merge(super::mcp::router(state.clone()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint takes another method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::logging::observe,
        ))
        .with_state(state)
}

/// The request's note, where handlers leave the outcome for the log line
/// and the metrics.
pub(super) struct Note(Option<super::logging::Noted>);

impl<S: Send + Sync> FromRequestParts<S> for Note {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Note(
            parts.extensions.get::<super::logging::Noted>().cloned(),
        ))
    }
}

impl Note {
    fn set(&self, outcome: &'static str, limit: Option<&'static str>) {
        if let Some(n) = &self.0 {
            let mut n = n.lock().unwrap_or_else(|p| p.into_inner());
            n.outcome = Some(outcome);
            n.limit = limit;
        }
    }
}

/// The tenant of a request, from its bearer token.
pub(super) struct Caller(pub(super) auth::Tenant);

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        if !state.auth {
            let t = state.tenants[0].clone();
            note(&parts.extensions, |n| n.tenant = Some(t.name.clone()));
            return Ok(Caller(t));
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer)
            .ok_or_else(|| unauthorized("give your token as 'Authorization: Bearer TOKEN'"))?;
        let t = auth::find(&state.tenants, token)
            .cloned()
            .ok_or_else(|| unauthorized("the token is not valid"))?;
        note(&parts.extensions, |n| n.tenant = Some(t.name.clone()));
        Ok(Caller(t))
    }
}

/// A JSON request body, with the API's own errors: 413 past the size
/// limit, 400 with one line for anything malformed.
pub(super) struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    r.status(),
                    "the request body is larger than the server takes (--max-body)",
                )
            } else {
                ApiError::new(r.status(), r.body_text().replace('\n', " "))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("malformed request: {e}")))
    }
}

/// Limits a request may ask for, each capped by the server's maxima.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsRequest {
    pub memory: Option<u64>,
    pub timeout: Option<f64>,
    pub max_output: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    code: Option<String>,
    argv: Option<Vec<String>>,
    stdin: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    limits: Option<LimitsRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    limits: Option<LimitsRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    code: String,
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(state: Shared) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine()?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(state: Shared) -> Response {
    let page = state.metrics.render(state.live_sessions());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// Runs `f` on the blocking pool; a panic there is a 500 (an internal
/// error), not a crash. Shared with the MCP tools.
pub(super) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))?
}

/// Refuses (429 `QuotaExceeded`) a tenant whose CPU-seconds-per-minute
/// quota is used up.
fn check_quota(state: &State, tenant: &auth::Tenant) -> Result<(), ApiError> {
    state
        .quotas
        .check(tenant, Instant::now())
        .map_err(|wait| {
            ApiError::quota(
                quota::NAME,
                wait,
                format!(
                    "this tenant's quota of {} = {} seconds of guest time is used up: retry in {wait} s",
                    quota::NAME,
                    tenant.cpu_seconds_per_minute.unwrap_or_default()
                ),
            )
        })
}

/// Guest work `f` of `tenant` on the blocking pool, with its admission
/// held until it ends; its wall time is taken from the tenant's quota.
async fn guest<R: Send + 'static>(
    state: &Arc<State>,
    tenant: &auth::Tenant,
    admission: super::Admission,
    f: impl FnOnce(&State) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let st = state.clone();
    let who = tenant.clone();
    blocking(move || {
        let _admission = admission;
        let started = Instant::now();
        let r = f(&st);
        let now = Instant::now();
        st.quotas.charge(&who, now - started, now);
        r
    })
    .await
}

async fn run(
    state: Shared,
    note: Note,
    Caller(tenant): Caller,
    Body(req): Body<RunRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine()?;
    let args = match (req.code, req.argv) {
        (Some(code), None) => vec!["-c".to_string(), code],
        (None, Some(argv)) => argv,
        _ => {
            return Err(ApiError::bad(
                "give either \"code\" (Python source) or \"argv\" (python's arguments)",
            ))
        }
    };
    if args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad("an argument contains a NUL character"));
    }
    for name in req.files.keys() {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
            || name.len() > 255
        {
            return Err(ApiError::bad(format!(
                "files: {name:?} is not a plain file name (it lands in /tmp)"
            )));
        }
    }
    let limits = state.limits(&tenant, req.limits.as_ref())?;
    check_quota(&state, &tenant)?;
    let admission = state.admit(&tenant).await?;
    let stdin = req.stdin.unwrap_or_default().into_bytes();
    let r = guest(&state, &tenant, admission, move |st| {
        run_once(st, args, stdin, req.files, limits)
    })
    .await?;
    let outcome = if !r["limit"].is_null() {
        "limit"
    } else if !r["crash"].is_null() {
        "crash"
    } else if r["exit_code"] == 0 {
        "ok"
    } else {
        "exit"
    };
    note.set(outcome, r["limit"].as_str().and_then(limit_name));
    Ok(Json(r))
}

/// A limit's name as a static string (for labels).
fn limit_name(l: &str) -> Option<&'static str> {
    match l {
        "time" => Some("time"),
        "memory" => Some("memory"),
        "output" => Some("output"),
        _ => None,
    }
}

pub(super) fn run_once(
    state: &State,
    args: Vec<String>,
    stdin: Vec<u8>,
    files: BTreeMap<String, String>,
    limits: Limits,
) -> Result<serde_json::Value, ApiError> {
    let engine = state.engine()?;
    let scratch = state.scratch.join(random_id());
    let result = (|| {
        std::fs::create_dir(&scratch)
            .map_err(|e| ApiError::internal(format!("cannot make a scratch directory: {e}")))?;
        for (name, content) in &files {
            std::fs::write(scratch.join(name), content)
                .map_err(|e| ApiError::internal(format!("cannot write {name}: {e}")))?;
        }
        let sandbox = engine
            .python
            .sandbox(&args, &[])
            .stdin(Input::Bytes(stdin))
            .stdout(Output::Capture)
            .stderr(Output::Capture)
            .limits(limits)
            .mount(MountSpec::new(engine.root.clone(), "/", false).expect("/ is a mount point"))
            .mount(MountSpec::new(scratch.clone(), "/tmp", true).expect("/tmp is a mount point"));
        sandbox.run().map_err(|e| match e.kind() {
            crate::ErrorKind::Input => ApiError::bad(e.to_string()),
            crate::ErrorKind::Internal => ApiError::internal(e.to_string()),
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let r = result?;
    let (limit, crash) = (r.status.limit(), r.status.crash().map(str::to_string));
    Ok(json!({
        "exit_code": r.status.exit_code(),
        "stdout": String::from_utf8_lossy(&r.stdout),
        "stderr": String::from_utf8_lossy(&r.stderr),
        "limit": limit,
        "crash": crash,
    }))
}

async fn create_session(
    state: Shared,
    Caller(tenant): Caller,
    Body(req): Body<SessionRequest>,
) -> Result<Response, ApiError> {
    state.engine()?;
    let limits = state.limits(&tenant, req.limits.as_ref())?;
    state.check_session_room(&tenant)?;
    check_quota(&state, &tenant)?;
    let admission = state.admit(&tenant).await?;
    let who = tenant.clone();
    let id = guest(&state, &who, admission, move |st| {
        let engine = st.engine()?;
        let id = random_id();
        let options = st.session_options(engine, limits, &tenant.name, &id)?;
        let session =
            crate::session::Session::start(&engine.python, options).map_err(|e| match e.kind() {
                crate::ErrorKind::Input => ApiError::bad(e.to_string()),
                crate::ErrorKind::Internal => ApiError::internal(e.to_string()),
            });
        let session = session.inspect_err(|_| st.remove_session_scratch(&tenant.name, &id))?;
        st.insert(
            &tenant,
            &id,
            session,
            super::store::StoredLimits::of(&limits),
        )
        .inspect_err(|_| st.remove_session_scratch(&tenant.name, &id))?;
        Ok(id)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

/// A session id as the server makes them: 32 lowercase hex digits.
/// Anything else is no session (404, as for an unknown id).
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

async fn exec(
    state: Shared,
    note: Note,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    Body(req): Body<CodeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    call(state, note, tenant, id, req.code, false).await
}

async fn eval(
    state: Shared,
    note: Note,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    Body(req): Body<CodeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    call(state, note, tenant, id, req.code, true).await
}

async fn call(
    state: Shared,
    note: Note,
    tenant: auth::Tenant,
    id: String,
    code: String,
    eval: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id)?;
    state.engine()?;
    check_quota(&state, &tenant)?;
    let admission = state.admit(&tenant).await?;
    let who = tenant.clone();
    let r = guest(&state, &who, admission, move |st| {
        st.with_session(&tenant, &id, |s| {
            let r = if eval { s.eval(&code) } else { s.exec(&code) };
            match r {
                Ok(c) => {
                    let mut out = json!({
                        "stdout": String::from_utf8_lossy(&c.stdout),
                        "stderr": String::from_utf8_lossy(&c.stderr),
                    });
                    if eval {
                        out["value"] = to_json(&c.value);
                    }
                    out
                }
                Err(e) => call_error(&e, s.is_alive()),
            }
        })
    })
    .await?;
    let outcome = match r["error"]["kind"].as_str() {
        None => "ok",
        Some("guest") => "error",
        Some("limit") => "limit",
        Some("ended") => "ended",
        Some("dead") => "dead",
        Some(_) => "input",
    };
    let limit = match r["error"]["type"].as_str() {
        Some("TimeLimit") => Some("time"),
        Some("MemoryLimit") => Some("memory"),
        Some("OutputLimit") => Some("output"),
        _ => None,
    };
    note.set(outcome, limit);
    Ok(Json(r))
}

/// A failed call, answered with 200: `{"error": {"kind", "type",
/// "message", "traceback"}, "alive", "stdout", "stderr"}`.
pub(super) fn call_error(e: &CallError, alive: bool) -> serde_json::Value {
    let (kind, type_name, traceback) = match &e.kind {
        CallErrorKind::Guest {
            type_name,
            traceback,
        } => ("guest", type_name.as_str(), Some(traceback.as_str())),
        CallErrorKind::TimeLimit => ("limit", "TimeLimit", None),
        CallErrorKind::MemoryLimit => ("limit", "MemoryLimit", None),
        CallErrorKind::OutputLimit => ("limit", "OutputLimit", None),
        CallErrorKind::Ended => ("ended", "SessionEnded", None),
        CallErrorKind::Dead => ("dead", "SessionDead", None),
        CallErrorKind::Input => ("input", "InputTooLarge", None),
    };
    json!({
        "error": {
            "kind": kind,
            "type": type_name,
            "message": e.message,
            "traceback": traceback,
        },
        "alive": alive,
        "stdout": String::from_utf8_lossy(&e.stdout),
        "stderr": String::from_utf8_lossy(&e.stderr),
    })
}

async fn delete_session(
    state: Shared,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let st = state.0.clone();
    if blocking(move || st.delete(&tenant, &id)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}

/// An interchange value as JSON: None, bools, ints, finite floats, str
/// and lists as themselves; a dict whose keys are all str, none starting
/// with `$`, as an object (key order is not kept); everything else as an
/// object with one `$` key: `{"$bytes": BASE64}`, `{"$float": "nan" |
/// "inf" | "-inf"}`, `{"$dict": [[KEY, VALUE], ...]}`, `{"$repr": TEXT}`.
pub(super) fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(n) => json!(n),
        Value::Float(x) if x.is_finite() => json!(x),
        Value::Float(x) => json!({"$float": if x.is_nan() {
            "nan"
        } else if *x > 0.0 {
            "inf"
        } else {
            "-inf"
        }}),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => {
            json!({"$bytes": base64::engine::general_purpose::STANDARD.encode(b)})
        }
        Value::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Dict(items) => {
            let plain = items
                .iter()
                .all(|(k, _)| matches!(k, Value::Str(s) if !s.starts_with('$')));
            if plain {
                let mut m = serde_json::Map::new();
                for (k, v) in items {
                    if let Value::Str(k) = k {
                        m.insert(k.clone(), to_json(v));
                    }
                }
                serde_json::Value::Object(m)
            } else {
                json!({"$dict": items
                    .iter()
                    .map(|(k, v)| json!([to_json(k), to_json(v)]))
                    .collect::<Vec<_>>()})
            }
        }
        Value::Repr(r) => json!({ "$repr": r }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_json() {
        let v = Value::List(vec![
            Value::None,
            Value::Int(-3),
            Value::Float(f64::NAN),
            Value::Bytes(b"hi".to_vec()),
            Value::Dict(vec![(Value::Str("a".into()), Value::Bool(true))]),
            Value::Dict(vec![(Value::Int(1), Value::Str("x".into()))]),
            Value::Repr("<object>".into()),
        ]);
        assert_eq!(
            to_json(&v),
            json!([null, -3, {"$float": "nan"}, {"$bytes": "aGk="}, {"a": true},
                   {"$dict": [[1, "x"]]}, {"$repr": "<object>"}])
        );
    }
}
