//! The service as a Model Context Protocol server (the official Rust SDK,
//! `rmcp`): the same runs, the same session table and store, the same
//! tenants and admission as the HTTP API, as MCP tools.
//!
//! - Over **streamable HTTP** at `/mcp` on the serve router: stateless
//!   (no MCP session is kept between requests, so a client cannot make the
//!   server hold state by connecting), JSON responses. [`guard`] runs
//!   first: the bearer token names the tenant (401 without one), the body
//!   is read within `--max-body` (413), and a `tools/call` waits for its
//!   turn like a `/v1` request or is answered 429; its admission is handed
//!   to the tool through the request's extensions and moves into the
//!   blocking task with the guest.
//! - Over **stdio** (`pynbox serve --mcp-stdio`): the one client that
//!   started the process, as the tenant `anonymous`; each tool call is
//!   admitted in the handler (a refusal is a tool error).
//!
//! Tools: `run_python` (a fresh sandbox), `session_exec` and
//! `session_eval` (a named session, started on first use; its name is
//! hashed into an id of the server's form, so it lives in the same table
//! and store as a `/v1` session of the tenant), `session_list_files` and
//! `session_read_file` (the session's `/tmp`, see [`super::scratch`]:
//! paths checked here, and opened below the directory with `cap-std`, which
//! refuses any way out, symbolic links included), `session_end`.
//!
//! Guest failures and refusals of what a tool was asked (a bad name or
//! path, 429) are tool results with `isError` (the model reads them);
//! arguments that do not fit a tool's schema are JSON-RPC errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::{request::Parts, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;

use super::api::blocking;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::api::{self, LimitsRequest};
use super::auth::Tenant;
use super::store::StoredLimits;
use super::{log, Admission, ApiError, Slot, SlotState, State};
use crate::session::Session;

/// Session names: what a client calls a session.
const MAX_NAME: usize = 64;
/// The most bytes `session_read_file` returns in one call.
const MAX_READ: u64 = 1 << 20;
/// What it returns when not told.
const DEFAULT_READ: u64 = 64 << 10;
/// The most entries `session_list_files` returns.
const MAX_ENTRIES: usize = 1000;
/// Guest paths the file tools take.
const MAX_PATH: usize = 4096;
/// How long a tool call waits for the interpreter to load.
const LOAD_WAIT: Duration = Duration::from_secs(120);

/// Who a request over HTTP comes from, and its turn to run (taken by the
/// tool it calls); put in the request's extensions by [`guard`].
#[derive(Clone)]
struct Ticket {
    tenant: Tenant,
    admission: Arc<Mutex<Option<Admission>>>,
}

/// `/mcp`, behind [`guard`].
pub(super) fn router(state: Arc<State>) -> Router<Arc<State>> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_body);
    if state.auth {
        // The Host check defends servers without authentication against
        // DNS rebinding (a web page reaching a local server through a name
        // that resolves to 127.0.0.1). With tokens, a page cannot call
        // without one, and a deployment is reached under names of its own.
        config = config.disable_allowed_hosts();
    }
    let st = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Mcp { state: st.clone() }),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Authentication and admission in front of the MCP service.
async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let tenant = match api::Caller::from_request_parts(&mut parts, &state).await {
        Ok(api::Caller(t)) => t,
        Err(e) => return e.into_response(),
    };
    let mut admission = None;
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, state.config.max_body).await {
            Ok(b) => b,
            Err(_) => return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the server takes (--max-body), or was cut short",
            )
            .into_response(),
        };
        match calls_a_tool(&bytes) {
            Err(e) => return e.into_response(),
            Ok(true) => match state.admit(&tenant).await {
                Ok(a) => admission = Some(a),
                Err(e) => return e.into_response(),
            },
            Ok(false) => {}
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(Ticket {
        tenant,
        admission: Arc::new(Mutex::new(admission)),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// Whether a message is a `tools/call` request (which runs guest work and
/// so waits for its turn). Batches are refused: one request could
/// otherwise carry many calls under one admission. What is not JSON is
/// left to the SDK to answer.
fn calls_a_tool(body: &[u8]) -> Result<bool, ApiError> {
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Array(_)) => Err(ApiError::bad(
            "batches of JSON-RPC messages are not taken: send one message per request",
        )),
        Ok(m) => Ok(m.get("method").and_then(Json::as_str) == Some("tools/call")),
        Err(_) => Ok(false),
    }
}

/// Serves MCP on stdin and stdout until the client closes stdin or
/// `stopped` resolves.
pub(super) async fn stdio(
    state: Arc<State>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (read, write) = rmcp::transport::io::stdio_pipes();
    // One message per line; a line is bounded like an HTTP body.
    let transport =
        AsyncRwTransport::new_server(read, write).with_max_line_length(state.config.max_body);
    let running = match rmcp::serve_server(Mcp { state }, transport).await {
        Ok(r) => r,
        Err(e) => {
            log(&format!("MCP over stdio: {e}"));
            return Ok(());
        }
    };
    let cancel = running.cancellation_token();
    tokio::select! {
        r = running.waiting() => {
            if let Err(e) = r {
                log(&format!("MCP over stdio failed: {e}"));
            }
        }
        _ = stopped => cancel.cancel(),
    }
    Ok(())
}

/// The MCP server: a view of the serve state.
#[derive(Clone)]
struct Mcp {
    state: Arc<State>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    code: String,
    stdin: Option<String>,
    #[serde(flatten)]
    limits: LimitArgs,
}

/// Limits as tool arguments; each is capped by the server's maxima.
#[derive(Deserialize, Default)]
struct LimitArgs {
    timeout: Option<f64>,
    memory: Option<u64>,
    max_output: Option<u64>,
}

impl LimitArgs {
    fn request(&self) -> LimitsRequest {
        LimitsRequest {
            memory: self.memory,
            timeout: self.timeout,
            max_output: self.max_output,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecArgs {
    session: String,
    code: String,
    #[serde(flatten)]
    limits: LimitArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalArgs {
    session: String,
    expr: String,
    #[serde(flatten)]
    limits: LimitArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    session: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    session: String,
    path: String,
    offset: Option<u64>,
    max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndArgs {
    session: String,
}

/// The JSON schemas of the tools' arguments (written out rather than
/// derived: they say what the server checks, bounds included).
fn tools() -> Vec<Tool> {
    let limits = json!({
        "timeout": {"type": "number", "exclusiveMinimum": 0,
            "description": "Seconds before the run (or each session call) is stopped; at most the server's maximum, which is also the default."},
        "memory": {"type": "integer", "minimum": 1,
            "description": "Bytes of memory the guest may have; at most the server's maximum, which is also the default."},
        "max_output": {"type": "integer", "minimum": 1,
            "description": "Bytes of stdout and stderr together; at most the server's maximum, which is also the default."}
    });
    let session = json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
        "description": "The session's name, chosen by you: letters, digits, '.', '_', '-'. A session is started on first use and keeps its variables, imports and /tmp across calls."});
    let with = |mut props: Json, extra: &Json| {
        for (k, v) in extra.as_object().expect("an object") {
            props[k] = v.clone();
        }
        props
    };
    let schema = |props: Json, required: &[&str]| -> Arc<serde_json::Map<String, Json>> {
        let Json::Object(m) = json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        }) else {
            unreachable!()
        };
        Arc::new(m)
    };
    let session_limits_note = " The limits apply when this call starts the session (timeout then applies to each call); a running session keeps its own.";
    vec![
        Tool::new(
            "run_python",
            "Run Python 3.13 code in a fresh, isolated sandbox (WebAssembly; no network; the standard library; a scratch /tmp that is removed afterwards). Returns the exit code, stdout, stderr, and which limit stopped it, if one did.",
            schema(
                with(
                    json!({
                        "code": {"type": "string", "description": "Python source, run as `python -c CODE`."},
                        "stdin": {"type": "string", "description": "What the program reads on standard input (default: nothing)."}
                    }),
                    &limits,
                ),
                &["code"],
            ),
        ),
        Tool::new(
            "session_exec",
            format!("Execute Python statements in a named session (an interpreter kept alive across calls: variables and imports persist). Returns stdout and stderr, or the exception with its traceback.{session_limits_note}"),
            schema(
                with(
                    json!({
                        "session": session,
                        "code": {"type": "string", "description": "Python statements, run as a module body in the session's __main__."}
                    }),
                    &limits,
                ),
                &["session", "code"],
            ),
        ),
        Tool::new(
            "session_eval",
            format!("Evaluate a Python expression in a named session and return its value as JSON (bytes as {{\"$bytes\": BASE64}}, other objects as {{\"$repr\": TEXT}}).{session_limits_note}"),
            schema(
                with(
                    json!({
                        "session": session,
                        "expr": {"type": "string", "description": "One Python expression."}
                    }),
                    &limits,
                ),
                &["session", "expr"],
            ),
        ),
        Tool::new(
            "session_list_files",
            format!("List a directory of a session's scratch space, /tmp in the sandbox (at most {MAX_ENTRIES} entries, sorted by name)."),
            schema(
                json!({
                    "session": session,
                    "path": {"type": "string", "maxLength": MAX_PATH,
                        "description": "A directory below /tmp: absolute (/tmp/out) or relative to /tmp (default: /tmp itself)."}
                }),
                &["session"],
            ),
        ),
        Tool::new(
            "session_read_file",
            format!("Read a file of a session's scratch space (/tmp in the sandbox): UTF-8 text as is, anything else as base64. At most {MAX_READ} bytes per call; use offset to read on."),
            schema(
                json!({
                    "session": session,
                    "path": {"type": "string", "maxLength": MAX_PATH,
                        "description": "A file below /tmp: absolute (/tmp/out.csv) or relative to /tmp."},
                    "offset": {"type": "integer", "minimum": 0, "description": "Where to start, in bytes (default 0)."},
                    "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_READ,
                        "description": format!("How many bytes at most (default {DEFAULT_READ}).")}
                }),
                &["session", "path"],
            ),
        ),
        Tool::new(
            "session_end",
            "End a named session: its interpreter, its saved state and its /tmp are removed.",
            schema(json!({"session": session}), &["session"]),
        ),
    ]
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pynbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Runs Python 3.13 in a WebAssembly sandbox: no network, no host files. \
                 run_python for one-off code; session_exec/session_eval to keep state across \
                 calls in a named session, whose /tmp session_list_files and session_read_file \
                 read.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let state = self.state.clone();
        let ticket = context
            .extensions
            .get::<Parts>()
            .and_then(|p| p.extensions.get::<Ticket>())
            .cloned();
        let (tenant, admission) = match ticket {
            Some(t) => {
                let a = t.admission.lock().unwrap().take();
                (t.tenant, a)
            }
            // Over HTTP the guard always puts a ticket; without one,
            // and with tokens required, nobody is let in.
            None if state.auth => {
                return Err(ErrorData::internal_error("the caller is not known", None))
            }
            None => (state.tenants[0].clone(), None),
        };
        let args = Json::Object(request.arguments.unwrap_or_default());
        let outcome = match request.name.as_ref() {
            "run_python" => {
                let a: RunArgs = parse(args)?;
                run_python(state, tenant, admission, a).await
            }
            "session_exec" => {
                let a: ExecArgs = parse(args)?;
                let (name, code, limits) = (a.session, a.code, a.limits);
                session_call(state, tenant, admission, name, code, false, limits).await
            }
            "session_eval" => {
                let a: EvalArgs = parse(args)?;
                let (name, code, limits) = (a.session, a.expr, a.limits);
                session_call(state, tenant, admission, name, code, true, limits).await
            }
            "session_list_files" => {
                let a: ListArgs = parse(args)?;
                files(state, tenant, move |st, t| list_files(st, t, a)).await
            }
            "session_read_file" => {
                let a: ReadArgs = parse(args)?;
                files(state, tenant, move |st, t| read_file(st, t, a)).await
            }
            "session_end" => {
                let a: EndArgs = parse(args)?;
                files(state, tenant, move |st, t| end_session(st, t, a)).await
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {other:?}"),
                    None,
                ))
            }
        };
        Ok(CallToolResponse::Complete(match outcome {
            Ok((value, false)) => CallToolResult::structured(value),
            Ok((value, true)) => CallToolResult::structured_error(value),
            Err(e) => CallToolResult::structured_error(json!({
                "error": {"type": e.kind, "message": e.message}
            })),
        }))
    }
}

fn parse<T: DeserializeOwned>(args: Json) -> Result<T, ErrorData> {
    serde_json::from_value(args)
        .map_err(|e| ErrorData::invalid_params(format!("arguments: {e}"), None))
}

/// What a tool answers: its JSON, and whether it is an error.
type Outcome = Result<(Json, bool), ApiError>;

/// The interpreter, waiting for it while it loads (an MCP client has no
/// `/readyz` to look at first).
async fn ready(state: &State) -> Result<(), ApiError> {
    let started = Instant::now();
    loop {
        match state.engine() {
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                if started.elapsed() > LOAD_WAIT {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r.map(|_| ()),
        }
    }
}

/// The caller's turn: the one its HTTP request was given, or one taken
/// now (stdio).
async fn turn(
    state: &State,
    tenant: &Tenant,
    given: Option<Admission>,
) -> Result<Admission, ApiError> {
    match given {
        Some(a) => Ok(a),
        None => state.admit(tenant).await,
    }
}

async fn run_python(
    state: Arc<State>,
    tenant: Tenant,
    admission: Option<Admission>,
    a: RunArgs,
) -> Outcome {
    if a.code.contains('\0') {
        return Err(ApiError::bad("code: contains a NUL character"));
    }
    let limits = state.limits(&tenant, Some(&a.limits.request()))?;
    let admission = turn(&state, &tenant, admission).await?;
    ready(&state).await?;
    let stdin = a.stdin.unwrap_or_default().into_bytes();
    let args = vec!["-c".to_string(), a.code];
    let r = blocking(move || {
        let _admission = admission;
        api::run_once(&state, args, stdin, BTreeMap::new(), limits)
    })
    .await?;
    let failed = r["exit_code"] != json!(0);
    Ok((r, failed))
}

/// A session name as the id the server's table and store know it by:
/// the same name of the same tenant is the same session, in this process
/// and the next.
fn session_id(name: &str) -> Result<String, ApiError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ApiError::bad(format!(
            "session: {name:?} is not a session name (1 to {MAX_NAME} letters, digits, '.', '_' or '-')"
        )));
    }
    let key = blake3::derive_key("pynbox mcp session name", name.as_bytes());
    Ok(hex::encode(&key[..16]))
}

async fn session_call(
    state: Arc<State>,
    tenant: Tenant,
    admission: Option<Admission>,
    name: String,
    code: String,
    eval: bool,
    limits: LimitArgs,
) -> Outcome {
    let id = session_id(&name)?;
    let limits = state.limits(&tenant, Some(&limits.request()))?;
    let admission = turn(&state, &tenant, admission).await?;
    ready(&state).await?;
    blocking(move || {
        let _admission = admission;
        // Started on first use; two first calls at once start one
        // session between them (the loser's is dropped and it calls the
        // winner's).
        for _ in 0..3 {
            let r = state.with_session(&tenant, &id, |s| {
                let r = if eval { s.eval(&code) } else { s.exec(&code) };
                match r {
                    Ok(c) => {
                        let mut out = json!({
                            "session": name,
                            "stdout": String::from_utf8_lossy(&c.stdout),
                            "stderr": String::from_utf8_lossy(&c.stderr),
                        });
                        if eval {
                            out["value"] = api::to_json(&c.value);
                        }
                        (out, false)
                    }
                    Err(e) => {
                        let mut out = api::call_error(&e, s.is_alive());
                        out["session"] = json!(name);
                        (out, true)
                    }
                }
            });
            match r {
                Err(e) if e.status == StatusCode::NOT_FOUND => {
                    start_session(&state, &tenant, &id, limits)?;
                }
                r => return r,
            }
        }
        Err(ApiError::internal(
            "the session was started and lost again: retry",
        ))
    })
    .await
}

/// Starts session `id` of `tenant` and adds it to the table, unless one
/// is there by now.
fn start_session(
    state: &State,
    tenant: &Tenant,
    id: &str,
    limits: crate::Limits,
) -> Result<(), ApiError> {
    state.check_session_room(tenant)?;
    let engine = state.engine()?;
    let options = state.session_options(engine, limits, &tenant.name, id)?;
    let session = Session::start(&engine.python, options).map_err(|e| match e.kind() {
        crate::ErrorKind::Input => ApiError::bad(e.to_string()),
        crate::ErrorKind::Internal => ApiError::internal(e.to_string()),
    })?;
    let key = (tenant.name.clone(), id.to_string());
    let mut map = state.sessions.lock().unwrap();
    if map.contains_key(&key) {
        return Ok(());
    }
    state.session_room(tenant, &map)?;
    map.insert(
        key,
        Arc::new(Slot {
            state: Mutex::new(SlotState::Live {
                session: Box::new(session),
                limits: StoredLimits::of(&limits),
            }),
            last_used: Mutex::new(Instant::now()),
        }),
    );
    Ok(())
}

/// Runs a file tool on the blocking pool. They run no guest, and take
/// no turn: their work is bounded by the limits below.
async fn files(
    state: Arc<State>,
    tenant: Tenant,
    f: impl FnOnce(&State, &Tenant) -> Outcome + Send + 'static,
) -> Outcome {
    blocking(move || f(&state, &tenant)).await
}

/// The session's scratch directory, opened, and `path` as a path below
/// it. Only `/tmp` and what is below it can be named: `..` is refused
/// outright, and the directory handle keeps every lookup inside.
fn resolve(
    state: &State,
    tenant: &Tenant,
    session: &str,
    path: &str,
) -> Result<(cap_std::fs::Dir, PathBuf), ApiError> {
    let id = session_id(session)?;
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(ApiError::bad(format!(
            "path: give a path below /tmp of at most {MAX_PATH} bytes"
        )));
    }
    let below = match path.strip_prefix("/tmp") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ if path.starts_with('/') => {
            return Err(ApiError::bad(format!(
                "path: {path:?} is outside /tmp, the session's scratch space (the only files these tools read)"
            )))
        }
        _ => path,
    };
    let mut rel = PathBuf::new();
    for c in below.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(ApiError::bad(format!(
                    "path: {path:?} contains '..': name files below /tmp directly"
                )))
            }
            c => rel.push(c),
        }
    }
    let dir = state.session_scratch(&tenant.name, &id);
    let dir = cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).map_err(
        |e| match e.kind() {
            std::io::ErrorKind::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "session {session:?} has no files here: it was never started, has ended, or was started by another server process"
                ),
            ),
            _ => ApiError::internal(format!("cannot open the scratch directory: {e}")),
        },
    )?;
    Ok((dir, rel))
}

/// One line for a failure to open or read `path`.
fn io_error(path: &str, e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{path}: no such file or directory"),
        ),
        // A symbolic link out of the directory, or one at the end of a
        // path opened without following links.
        std::io::ErrorKind::PermissionDenied => ApiError::bad(format!(
            "{path}: refused (it leads out of /tmp, or may not be read)"
        )),
        _ if e.raw_os_error() == Some(libc::ELOOP) => ApiError::bad(format!(
            "{path}: is a symbolic link, which these tools do not follow"
        )),
        // A directory opened without following links, that is a link.
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => ApiError::bad(format!(
            "{path}: is not a directory (symbolic links are not followed)"
        )),
        _ => ApiError::bad(format!("{path}: {e}")),
    }
}

fn list_files(state: &State, tenant: &Tenant, a: ListArgs) -> Outcome {
    let path = a.path.as_deref().unwrap_or("/tmp");
    let (dir, rel) = resolve(state, tenant, &a.session, path)?;
    let dir = if rel.as_os_str().is_empty() {
        dir
    } else {
        cap_fs_ext::DirExt::open_dir_nofollow(&dir, &rel).map_err(|e| io_error(path, e))?
    };
    let mut entries = Vec::new();
    let mut truncated = false;
    for e in dir.entries().map_err(|e| io_error(path, e))? {
        let e = e.map_err(|e| io_error(path, e))?;
        if entries.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        // The entry itself, not what a link names.
        let meta = e.metadata().map_err(|e| io_error(path, e))?;
        let kind = if meta.is_symlink() {
            "symlink"
        } else if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            "other"
        };
        entries.push(json!({
            "name": e.file_name().to_string_lossy(),
            "type": kind,
            "size": meta.len(),
        }));
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok((
        json!({"session": a.session, "path": path, "entries": entries, "truncated": truncated}),
        false,
    ))
}

fn read_file(state: &State, tenant: &Tenant, a: ReadArgs) -> Outcome {
    let max = a.max_bytes.unwrap_or(DEFAULT_READ);
    if max == 0 || max > MAX_READ {
        return Err(ApiError::bad(format!(
            "max_bytes: give 1 to {MAX_READ} bytes"
        )));
    }
    let (dir, rel) = resolve(state, tenant, &a.session, &a.path)?;
    if rel.as_os_str().is_empty() {
        return Err(ApiError::bad("path: name a file below /tmp"));
    }
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    cap_fs_ext::OpenOptionsFollowExt::follow(&mut options, cap_fs_ext::FollowSymlinks::No);
    let mut file = dir
        .open_with(&rel, &options)
        .map_err(|e| io_error(&a.path, e))?;
    let meta = file.metadata().map_err(|e| io_error(&a.path, e))?;
    if !meta.is_file() {
        return Err(ApiError::bad(format!(
            "{}: is not a regular file (list a directory with session_list_files)",
            a.path
        )));
    }
    let offset = a.offset.unwrap_or(0);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(&a.path, e))?;
    let mut buf = Vec::new();
    // One byte more than asked for says whether there is more.
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(&a.path, e))?;
    let truncated = buf.len() as u64 > max;
    buf.truncate(max as usize);
    let (encoding, content) = match std::str::from_utf8(&buf) {
        Ok(s) => ("utf-8", s.to_string()),
        // Cut inside a character at the end: the whole characters, and
        // the next read starts at the cut one.
        Err(e) if truncated && e.error_len().is_none() => {
            buf.truncate(e.valid_up_to());
            ("utf-8", String::from_utf8_lossy(&buf).into_owned())
        }
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(&buf),
        ),
    };
    Ok((
        json!({
            "session": a.session,
            "path": a.path,
            "size": meta.len(),
            "offset": offset,
            "bytes": buf.len(),
            "encoding": encoding,
            "content": content,
            "truncated": truncated,
        }),
        false,
    ))
}

fn end_session(state: &State, tenant: &Tenant, a: EndArgs) -> Outcome {
    let id = session_id(&a.session)?;
    let ended = state.delete(tenant, &id)?;
    Ok((json!({"session": a.session, "ended": ended}), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_become_ids_of_the_servers_form() {
        let id = session_id("analysis-1.v2_x").unwrap();
        assert!(super::super::store::is_session_id(&id), "{id}");
        assert_eq!(id, session_id("analysis-1.v2_x").unwrap());
        assert_ne!(id, session_id("analysis-1.v2_y").unwrap());
        // Made of allowed characters, and hashed like any name: it never
        // reaches a path.
        assert!(super::super::store::is_session_id(
            &session_id("..").unwrap()
        ));
        for bad in ["", "a/b", "a b", "é", "a\0", &"x".repeat(MAX_NAME + 1)] {
            assert!(session_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_tool_calls_take_a_turn_and_batches_are_refused() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
        assert!(calls_a_tool(call).unwrap());
        assert!(!calls_a_tool(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap());
        assert!(!calls_a_tool(b"not json").unwrap());
        assert!(!calls_a_tool(br#"{"method": 5}"#).unwrap());
        assert!(calls_a_tool(br#"[{"method":"tools/list"}]"#).is_err());
    }
}
