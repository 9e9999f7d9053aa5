//! `pynbox serve`: the sandbox as an HTTP/JSON service for many tenants.
//!
//! The server is a layer over the library, like the CLI: one-shot runs
//! are a [`Sandbox`](crate::Sandbox) each, sessions are
//! [`Session`](crate::session::Session)s kept in memory while they are in
//! use and in the [`store`] when idle. The network side is async (tokio,
//! axum); guest work is blocking and runs on tokio's blocking pool, at
//! most `max_concurrent` at once ([`State::admit`]): each tenant has a
//! bounded queue in front of that, and a request beyond it is answered
//! `429` at once, so load never grows memory without bound.
//!
//! - `mod.rs`: configuration, the router, admission, the session table,
//!   the idle sweeper and shutdown.
//! - `api.rs`: the handlers and their JSON.
//! - `auth.rs`: the tokens file and bearer tokens.
//! - `quota.rs`: the tenants' CPU-seconds-per-minute quota.
//! - `logging.rs`: request ids and the log line of each request.
//! - `metrics.rs`: `/metrics`.
//! - `store.rs`: the session store (a directory, or object storage).
//! - `scratch.rs`: each session's scratch directory (its `/tmp`).
//! - `mcp.rs`: the same service as a Model Context Protocol server, over
//!   stdio and streamable HTTP (`/mcp`).

mod api;
pub mod auth;
pub mod logging;
mod mcp;
mod metrics;
mod quota;
mod scratch;
pub mod store;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::session::{Python, Session, SessionOptions};
use crate::{Limits, MountSpec, Runtime};
use auth::Tenant;
use store::{Store, StoredLimits};

/// Where the server listens.
#[derive(Clone, Debug)]
pub enum Listen {
    /// `HOST:PORT` (port 0: any free port; the bound address is printed).
    Tcp(String),
    /// A Unix domain socket, made readable and writable by this user only.
    Unix(PathBuf),
    /// MCP over stdin and stdout, for the one client that started the
    /// process (`--mcp-stdio`); no HTTP.
    Stdio,
}

/// Everything `pynbox serve` is told.
pub struct Config {
    /// The install whose python runs (`pynbox install DEST python`).
    pub dest: PathBuf,
    pub listen: Listen,
    /// The tenants; `None` with `--no-auth` (one tenant, `anonymous`).
    pub tenants: Option<Vec<Tenant>>,
    /// Guest runs at once, all tenants together.
    pub max_concurrent: usize,
    /// Requests of one tenant that may wait beyond those running.
    pub queue: usize,
    /// Sessions of one tenant in memory at once (idle ones saved to the
    /// store do not count).
    pub max_sessions: usize,
    /// A session without calls for this long is saved and dropped from memory.
    pub session_idle: Duration,
    /// A directory, or an object store's URL (`s3://BUCKET/PREFIX`).
    pub session_store: store::Location,
    /// The largest limits a request may ask for; also what it gets when
    /// it asks for none.
    pub max_limits: Limits,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How long a shutdown waits for running work.
    pub grace: Duration,
    /// Compiled machine code [default: DEST/cache].
    pub cache_dir: Option<PathBuf>,
    /// How log lines are written.
    pub log_format: logging::LogFormat,
    /// Whether `GET /metrics` answers.
    pub metrics: bool,
}

/// The interpreter, loaded once (`/readyz` answers 200 from then on).
struct Engine {
    /// The interpreter, its snapshot and the install's native modules.
    python: Python,
    root: PathBuf,
}

/// How many of one tenant's requests are admitted (running or queued),
/// and its own limit on running ones.
struct TenantLoad {
    admitted: AtomicUsize,
    running: Arc<Semaphore>,
}

/// A session known to this process: live in memory, not yet looked up in
/// the store, or gone (saved away or deleted: look it up again).
enum SlotState {
    Unloaded,
    Live {
        session: Box<Session>,
        limits: StoredLimits,
    },
    Gone,
}

struct Slot {
    state: Mutex<SlotState>,
    last_used: Mutex<Instant>,
}

type Key = (String, String);

pub(crate) struct State {
    config: Config,
    tenants: Vec<Tenant>,
    /// Whether requests must carry a token (not with `--no-auth`).
    auth: bool,
    engine: OnceLock<Result<Engine, String>>,
    global: Arc<Semaphore>,
    load: Mutex<HashMap<String, Arc<TenantLoad>>>,
    sessions: Mutex<HashMap<Key, Arc<Slot>>>,
    store: Store,
    scratch: PathBuf,
    metrics: metrics::Metrics,
    quotas: quota::Quotas,
}

/// An error answered as `{"error": {"type", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Seconds for `Retry-After` (429 only).
    retry_after: u64,
    /// The quota a `QuotaExceeded` names, also as its own field.
    quota: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "NotReady",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            _ => "Internal",
        };
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: 1,
            quota: None,
        }
    }

    /// 429: `quota` of the tenant is used up until `retry_after` seconds
    /// from now.
    pub fn quota(quota: &'static str, retry_after: u64, message: String) -> ApiError {
        ApiError {
            kind: "QuotaExceeded",
            retry_after: retry_after.max(1),
            quota: Some(quota),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "no such session")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": {"type": self.kind, "message": self.message}
        });
        if let Some(q) = self.quota {
            body["error"]["quota"] = q.into();
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        r.extensions_mut().insert(logging::ErrorType(self.kind));
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from(self.retry_after));
            }
            StatusCode::UNAUTHORIZED => {
                r.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}

/// Held while a request's guest work runs (or waits to): moved into the
/// blocking task, so it is released when the work ends even if the
/// client went away.
pub(crate) struct Admission {
    _global: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
    _count: Admitted,
}

struct Admitted(Arc<TenantLoad>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request waiting for its turn, in the queue-depth gauge while it lives.
struct Waiting<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Waiting<'a> {
    fn new(g: &'a prometheus_client::metrics::gauge::Gauge) -> Waiting<'a> {
        g.inc();
        Waiting(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl State {
    fn engine(&self) -> Result<&Engine, ApiError> {
        match self.engine.get() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(ApiError::internal(e.clone())),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the interpreter is still loading: retry shortly",
            )),
        }
    }

    /// Waits for a turn to run guest work for `tenant`, or refuses with
    /// 429 when the tenant already has its limit running and its queue
    /// full.
    async fn admit(&self, tenant: &Tenant) -> Result<Admission, ApiError> {
        let load = {
            let mut map = self.load.lock().unwrap();
            map.entry(tenant.name.clone())
                .or_insert_with(|| {
                    let n = tenant
                        .max_concurrent
                        .unwrap_or(self.config.max_concurrent)
                        .max(1);
                    Arc::new(TenantLoad {
                        admitted: AtomicUsize::new(0),
                        running: Arc::new(Semaphore::new(n)),
                    })
                })
                .clone()
        };
        let cap = tenant
            .max_concurrent
            .unwrap_or(self.config.max_concurrent)
            .max(1)
            + self.config.queue;
        if load.admitted.fetch_add(1, Ordering::SeqCst) >= cap {
            load.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests of this tenant are running or waiting: retry later",
            ));
        }
        let count = Admitted(load.clone());
        let closed = |_| ApiError::internal("the server is shutting down");
        // Counted as queued while waiting, also when the client goes away
        // and this future is dropped.
        let waiting = Waiting::new(&self.metrics.queued);
        let tenant_permit = load.running.clone().acquire_owned().await.map_err(closed)?;
        let global = self.global.clone().acquire_owned().await.map_err(closed)?;
        drop(waiting);
        Ok(Admission {
            _global: global,
            _tenant: tenant_permit,
            _count: count,
        })
    }

    /// The largest limits `tenant` may have: the server's, with the
    /// tenant's own memory maximum.
    fn maxima(&self, tenant: &Tenant) -> Limits {
        let max = self.config.max_limits;
        Limits {
            memory: min_limit(max.memory, tenant.max_memory),
            ..max
        }
    }

    /// The largest stored session `tenant` can have: one within its memory
    /// maximum. Anything larger in the store is refused unread.
    fn max_stored(&self, tenant: &Tenant) -> u64 {
        let memory = self
            .maxima(tenant)
            .memory
            .unwrap_or(crate::runtime::MAX_MEMORY)
            .min(crate::runtime::MAX_MEMORY);
        store::max_stored(memory)
    }

    /// `requested`, each limit capped by `tenant`'s maxima; what is not
    /// asked for is the maximum.
    fn limits(
        &self,
        tenant: &Tenant,
        requested: Option<&api::LimitsRequest>,
    ) -> Result<Limits, ApiError> {
        let max = self.maxima(tenant);
        let Some(r) = requested else {
            return Ok(max);
        };
        for (name, v) in [("memory", r.memory), ("max_output", r.max_output)] {
            if v == Some(0) {
                return Err(ApiError::bad(format!(
                    "limits.{name}: give a positive number of bytes"
                )));
            }
        }
        let timeout = match r.timeout {
            None => None,
            // Too far away to represent: no limit of its own.
            Some(t) if t.is_finite() && t > 0.0 => Duration::try_from_secs_f64(t).ok(),
            Some(_) => {
                return Err(ApiError::bad(
                    "limits.timeout: give a number of seconds greater than 0",
                ))
            }
        };
        Ok(cap(
            Limits {
                memory: r.memory,
                timeout,
                max_output: r.max_output,
                ..max
            },
            max,
        ))
    }

    /// The install read-only at `/`, the session's scratch directory
    /// read-write at `/tmp`.
    fn session_options(
        &self,
        engine: &Engine,
        limits: Limits,
        tenant: &str,
        id: &str,
    ) -> Result<SessionOptions, ApiError> {
        let scratch = self.make_session_scratch(tenant, id)?;
        Ok(SessionOptions {
            mounts: vec![
                MountSpec::new(engine.root.clone(), "/", false).expect("/ is a mount point"),
                MountSpec::new(scratch, "/tmp", true).expect("/tmp is a mount point"),
            ],
            limits,
            ..SessionOptions::default()
        })
    }

    /// Runs `f` on live session `id` of `tenant`, restoring it from the
    /// store first when it is not in memory. Blocking: call it on the
    /// blocking pool. No such session (of this tenant) is a 404.
    fn with_session<R>(
        &self,
        who: &Tenant,
        id: &str,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<R, ApiError> {
        let engine = self.engine()?;
        let tenant = who.name.as_str();
        let key = (tenant.to_string(), id.to_string());
        loop {
            let slot = self.slot(&key);
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            match &*state {
                // Being saved away or deleted this very moment: it
                // leaves the table next; look again.
                SlotState::Gone => {
                    drop(state);
                    std::thread::yield_now();
                    continue;
                }
                SlotState::Live { .. } => {}
                SlotState::Unloaded => match self.store.load(tenant, id, self.max_stored(who)) {
                    Ok(Some((limits, bytes))) => {
                        // Within today's maxima, which may be lower
                        // than when the session was saved.
                        let limits = StoredLimits::of(&cap(limits.limits(), self.maxima(who)));
                        let restored = self
                            .session_options(engine, limits.limits(), tenant, id)
                            .and_then(|options| {
                                Session::restore(&engine.python, &bytes, options)
                                    .map_err(|e| ApiError::internal(e.to_string()))
                            });
                        match restored {
                            Ok(s) => {
                                self.metrics.restored.inc();
                                tracing::info!(
                                    tenant,
                                    session = id,
                                    "session restored from the store"
                                );
                                *state = SlotState::Live {
                                    session: Box::new(s),
                                    limits,
                                };
                            }
                            Err(e) => {
                                *state = SlotState::Gone;
                                self.forget(&key, &slot);
                                return Err(ApiError::internal(format!(
                                    "the session could not be restored: {}",
                                    e.message
                                )));
                            }
                        }
                    }
                    Ok(None) => {
                        *state = SlotState::Gone;
                        self.forget(&key, &slot);
                        return Err(ApiError::not_found());
                    }
                    Err(e) => {
                        *state = SlotState::Gone;
                        self.forget(&key, &slot);
                        return Err(ApiError::internal(e));
                    }
                },
            }
            let SlotState::Live { session, .. } = &mut *state else {
                unreachable!("made live above")
            };
            let r = f(session);
            *slot.last_used.lock().unwrap() = Instant::now();
            return Ok(r);
        }
    }

    /// The slot of `key`, made (unloaded) when there is none.
    fn slot(&self, key: &Key) -> Arc<Slot> {
        self.sessions
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::Unloaded),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    /// Removes `slot` from the table if it is still the one for `key`.
    fn forget(&self, key: &Key, slot: &Arc<Slot>) {
        let mut map = self.sessions.lock().unwrap();
        if map.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(key);
        }
    }

    /// Adds a session just started.
    /// Refuses (429) when `tenant` already has its maximum of sessions
    /// in memory.
    fn session_room(&self, tenant: &Tenant, map: &HashMap<Key, Arc<Slot>>) -> Result<(), ApiError> {
        let max = tenant.max_sessions.unwrap_or(self.config.max_sessions);
        if map.keys().filter(|(t, _)| *t == tenant.name).count() >= max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this tenant has {max} sessions in memory, its maximum: delete one, or wait until one is idle and saved"
                ),
            ));
        }
        Ok(())
    }

    fn check_session_room(&self, tenant: &Tenant) -> Result<(), ApiError> {
        self.session_room(tenant, &self.sessions.lock().unwrap())
    }

    /// Adds a session just started, if `tenant` has room for it.
    fn insert(
        &self,
        tenant: &Tenant,
        id: &str,
        session: Session,
        limits: StoredLimits,
    ) -> Result<(), ApiError> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Live {
                session: Box::new(session),
                limits,
            }),
            last_used: Mutex::new(Instant::now()),
        });
        let mut map = self.sessions.lock().unwrap();
        self.session_room(tenant, &map)?;
        map.insert((tenant.name.clone(), id.to_string()), slot);
        Ok(())
    }

    /// Ends session `id` of `tenant`, in memory and in the store.
    /// Blocking. `false`: there was no such session.
    fn delete(&self, who: &Tenant, id: &str) -> Result<bool, ApiError> {
        let tenant = who.name.as_str();
        let key = (tenant.to_string(), id.to_string());
        let slot = self.slot(&key);
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let live = matches!(&*state, SlotState::Live { .. });
        let stored = self
            .store
            .load(tenant, id, self.max_stored(who))
            .map_err(ApiError::internal)?
            .is_some();
        *state = SlotState::Gone;
        self.forget(&key, &slot);
        self.store.remove(tenant, id).map_err(ApiError::internal)?;
        self.remove_session_scratch(tenant, id);
        Ok(live || stored)
    }

    /// Saves to the store and drops from memory every live session idle
    /// for `idle` or longer (all of them with `Duration::ZERO`). A session
    /// busy with a call is left alone. One that cannot be saved (it has
    /// ended, or holds files open) is dropped, and its older saved state,
    /// if any, removed. Blocking.
    fn sweep(&self, idle: Duration) {
        let slots: Vec<(Key, Arc<Slot>)> = self
            .sessions
            .lock()
            .unwrap()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (key, slot) in slots {
            if slot.last_used.lock().unwrap().elapsed() < idle {
                continue;
            }
            let Ok(mut state) = slot.state.try_lock() else {
                if idle.is_zero() {
                    tracing::warn!(
                        tenant = key.0,
                        session = key.1,
                        "session busy with a call: not saved"
                    );
                }
                continue;
            };
            let SlotState::Live { session, limits } = &mut *state else {
                continue;
            };
            let (tenant, id) = &key;
            let saved = match session.save() {
                Ok(bytes) => match self.store.save(tenant, id, *limits, &bytes) {
                    Ok(()) => Some(bytes.len()),
                    Err(e) => {
                        // Kept in memory: the store may come back.
                        tracing::warn!(tenant, session = id, "session not saved: {e}");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        tenant,
                        session = id,
                        "session dropped: it cannot be saved ({e})"
                    );
                    let _ = self.store.remove(tenant, id);
                    self.remove_session_scratch(tenant, id);
                    None
                }
            };
            *state = SlotState::Gone;
            drop(state);
            self.forget(&key, &slot);
            // Counted and logged once out of the table, so that whoever
            // reads the line finds the session gone from memory.
            if let Some(bytes) = saved {
                self.metrics.saved.inc();
                tracing::info!(tenant, session = id, bytes, "session saved to the store");
            }
        }
    }

    fn live_sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }
}

/// The smaller of two limits, `None` being no limit.
fn min_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `limits`, each no larger than `max`'s.
fn cap(limits: Limits, max: Limits) -> Limits {
    Limits {
        memory: min_limit(limits.memory, max.memory),
        timeout: min_limit(limits.timeout, max.timeout),
        max_output: min_limit(limits.max_output, max.max_output),
        ..limits
    }
}

/// The bound address, on stdout (for whoever started the server: a
/// closed stdout is no reason to fail).
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One log line (stderr, in the `--log-format`).
pub(crate) fn log(line: &str) {
    tracing::info!("{line}");
}

/// A fresh random id: 128 bits, as hex.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system's random source");
    hex::encode(b)
}

/// Whether every address `addr` names is a loopback address.
pub fn is_loopback(addr: &str) -> Result<bool, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--listen {addr}: {e} (give HOST:PORT, e.g. 127.0.0.1:8080)"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

/// Runs the server until SIGTERM or SIGINT, then shuts down: stops
/// accepting, lets running requests finish within the grace period,
/// saves the live sessions to the store and returns.
pub fn serve(config: Config) -> Result<(), String> {
    logging::init(config.log_format);
    let (tenants, auth) = match &config.tenants {
        Some(t) => (t.clone(), true),
        None => match &config.listen {
            Listen::Tcp(a) if !is_loopback(a)? => {
                return Err(format!(
                    "--no-auth on {a}, which is not a loopback address: anyone who can reach it could run code; give --tokens FILE"
                ))
            }
            _ => (vec![auth::anonymous()], false),
        },
    };
    if config.max_concurrent == 0 {
        return Err("--max-concurrent must be at least 1".into());
    }
    if config.max_sessions == 0 {
        return Err("--max-sessions must be at least 1".into());
    }
    // The TLS of an object store's client (reqwest takes the process's
    // provider); an error only says one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Guests wait for a permit before they take a blocking thread;
        // the rest are stores and saves.
        .max_blocking_threads(config.max_concurrent + 16)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let store = Store::open(&config.session_store, rt.handle())?;
    let scratch = std::env::temp_dir().join(format!("pynbox-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
    let state = Arc::new(State {
        global: Arc::new(Semaphore::new(config.max_concurrent)),
        config,
        tenants,
        auth,
        engine: OnceLock::new(),
        load: Mutex::default(),
        sessions: Mutex::default(),
        store,
        scratch: scratch.clone(),
        metrics: metrics::Metrics::new(),
        quotas: quota::Quotas::default(),
    });
    let r = rt.block_on(run(state));
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&scratch);
    r
}

async fn run(state: Arc<State>) -> Result<(), String> {
    let app = api::router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server = match &state.config.listen {
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            announce(&format!("listening on http://{bound}"));
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(stopped)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Listen::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            announce(&format!("listening on unix:{}", path.display()));
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(stopped)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Listen::Stdio => tokio::spawn(mcp::stdio(state.clone(), stopped)),
    };
    // Load the interpreter while already answering /healthz; without
    // it the server is of no use, and stops.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
    {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let dest = &state.config.dest;
            let cache = state
                .config
                .cache_dir
                .clone()
                .unwrap_or_else(|| dest.join("cache"));
            let loaded = load_engine(dest, cache);
            match &loaded {
                Ok(_) => log("ready"),
                Err(e) => {
                    let _ = fatal_tx.try_send(format!("cannot load the interpreter: {e}"));
                }
            }
            let _ = state.engine.set(loaded);
        });
    }
    // The idle sweeper.
    {
        let state = state.clone();
        let idle = state.config.session_idle;
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || s.sweep(idle)).await;
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut server = server;
    let mut ended = false;
    tokio::select! {
        r = &mut server => {
            r.map_err(|e| e.to_string())??;
            // Only MCP over stdio ends by itself: its client closed stdin.
            // Its sessions are saved like at SIGTERM.
            log("stdin closed: stopping");
            ended = true;
        }
        Some(e) = fatal_rx.recv() => return Err(e),
        _ = term.recv() => log("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => log("SIGINT: stopping"),
    }
    let _ = stop_tx.send(true);
    let grace = state.config.grace;
    if !ended {
        tokio::select! {
            r = &mut server => {
                if let Ok(Err(e)) = r {
                    log(&format!("the server failed while stopping: {e}"));
                }
            }
            _ = tokio::time::sleep(grace) => log(&format!(
                "the grace period of {} s is over: running work is abandoned", grace.as_secs_f64()
            )),
        }
    }
    let live = state.live_sessions();
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.sweep(Duration::ZERO)).await;
    log(&format!("stopped ({live} sessions were in memory)"));
    Ok(())
}

fn load_engine(dest: &std::path::Path, cache: PathBuf) -> Result<Engine, String> {
    // Many guests in one process: epoch interruption, never ending the
    // process at a time limit.
    let runtime = Runtime::new(Some(cache)).map_err(|e| e.to_string())?;
    let python = Python::from_install(&runtime, dest).map_err(|e| e.to_string())?;
    Ok(Engine {
        python,
        root: dest.join("root"),
    })
}
