//! The `pynbox` command: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use pynbox::{
    parse_size, ErrorKind, FdSpec, Input, Limits, LockDown, MountSpec, Output, Runtime, Sandbox,
    Status,
};

/// Exit status for mistakes in the command line or its inputs.
const EXIT_USAGE: u8 = 2;
/// Exit status when pynbox itself fails (not the guest).
const EXIT_INTERNAL: u8 = 125;

#[derive(Parser)]
#[command(
    name = "pynbox",
    version,
    about = "Run untrusted Python safely: CPython compiled to WebAssembly, confined by Wasmtime",
    long_about = "Run untrusted Python safely: CPython compiled to WebAssembly, confined by Wasmtime.\n\n\
        The guest sees only the directories you mount (-m), the descriptors you forward \
        (-h, -r, -w) and the environment variables you set (-E); it has no network, no \
        processes and no host environment.\n\n\
        Quick start:\n  pynbox install DEST python tests\n  DEST/bin/test_pynbox\n  \
        DEST/bin/run python -c 'import os; print(os.listdir(\"/\"))'\n\n\
        As a service: pynbox serve --dest DEST --listen 127.0.0.1:8080 --tokens tokens.toml \
        (see pynbox serve --help)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a WebAssembly program (wasm32-wasip1) in a sandbox.
    Run(RunArgs),
    /// Build packages from source (all recipes when none is named).
    #[command(
        after_help = "Each package lands in build/packages/NAME.VERSION.tar.zst of the checkout, \
        with build/packages/index.json. Builds are cached in $PYNBOX_CACHE (default ~/.cache/pynbox) \
        by the recipe's inputs: an unchanged package is not rebuilt.\n\n\
        Example:\n  pynbox build python tests"
    )]
    Build {
        /// Packages to build (see recipes/).
        packages: Vec<String>,
        /// The recipes directory [default: recipes/ of the checkout].
        #[arg(long, value_name = "DIR")]
        recipes: Option<PathBuf>,
    },
    /// Install packages into a sandbox directory DEST (the runner is always installed).
    #[command(after_help = "Examples:\n  pynbox install DEST python tests\n  \
        pynbox install DEST python=3.13.5-5 --repo /mnt/pynbox-packages\n  \
        pynbox install DEST lxml --repo https://example.org/pynbox\n  \
        pynbox install DEST   (refresh the runner and the pre-initialised python, e.g. after copying DEST)\n\n\
        Installing compiles the interpreter to machine code and pre-initialises python (a snapshot \
        after start-up and common imports, which runs resume from), so no run waits for either.\n\n\
        Then: DEST/bin/run python -c 'print(1)'")]
    Install {
        /// The install directory.
        dest: PathBuf,
        /// Packages, as NAME or NAME=VERSION.
        packages: Vec<String>,
        /// Where packages come from: a directory or an http(s) URL [default: build/packages of the checkout].
        /// A plain http:// URL is accepted only for a loopback address.
        #[arg(long, value_name = "DIR|URL")]
        repo: Option<String>,
        /// Accept a plain http:// repository on any host. Anyone on the network
        /// path could then serve their own packages: use https instead.
        #[arg(long)]
        allow_insecure_http: bool,
    },
    /// List the packages installed in DEST.
    List { dest: PathBuf },
    /// Check every installed file of DEST against its receipt.
    Verify { dest: PathBuf },
    /// Remove packages from DEST.
    Remove {
        dest: PathBuf,
        #[arg(required = true)]
        packages: Vec<String>,
    },
    /// Install pure-Python distributions from PyPI (or another package index) into DEST.
    #[command(after_help = "DEST/bin/pip calls this with --dest DEST. Examples:\n  \
        DEST/bin/pip install 'attrs>=23' python-dateutil\n  \
        DEST/bin/pip install -r requirements.txt\n  \
        DEST/bin/pip sync DEST/pylock.toml --no-index   (reproduce the lock, offline from the cache)\n  \
        DEST/bin/run python -c 'import attrs'\n\n\
        Requirements are resolved for the sandbox (CPython 3.13, sys_platform \"wasi\"); only \
        pure-Python wheels (py3-none-any) are installed; a release without one is built from its \
        source distribution inside the sandbox (no network, a scratch directory, --build-timeout). Downloads are checked against the index's \
        sha256 and cached in $PYNBOX_PYPI_CACHE (default ~/.cache/pynbox/pypi). Every change \
        rewrites DEST/pylock.toml.")]
    Pip(PipArgs),
    /// Serve the sandbox over HTTP/JSON and MCP to many tenants: runs and sessions.
    Serve(ServeArgs),
}

/// Arguments of `pynbox serve`.
#[derive(Args)]
#[command(
    after_help = "Start (tokens.toml holds [[tenant]] entries with a name and a token):\n  \
    pynbox serve --dest DEST --listen 127.0.0.1:8080 --tokens tokens.toml\n\n\
    Call:\n  \
    curl -s -H \"Authorization: Bearer $TOKEN\" -d '{\"code\": \"print(6*7)\"}' http://127.0.0.1:8080/v1/run\n  \
    curl -s -H \"Authorization: Bearer $TOKEN\" -d '{}' http://127.0.0.1:8080/v1/sessions   (then .../v1/sessions/ID/exec and /eval)\n\n\
    The first line on stdout is the bound address (\"listening on http://ADDR\"); logs go to stderr. \
    SIGTERM stops accepting, lets running requests finish within --grace, saves live sessions \
    to the store and exits 0. The API is described in README.md, \"As a service\".\n\n\
    MCP (Model Context Protocol): the same server answers MCP over streamable HTTP at /mcp \
    (same tokens, same limits). For an MCP client that starts its servers itself, \
    --mcp-stdio speaks MCP on stdin/stdout instead of listening, for that one client, and \
    exits when it closes stdin:\n  \
    pynbox serve --dest DEST --mcp-stdio\n\
    Tools: run_python, session_exec, session_eval, session_list_files, session_read_file, \
    session_end (README.md, \"As an MCP server\")."
)]
struct ServeArgs {
    /// The install whose python runs (made with `pynbox install DEST python`).
    #[arg(long, value_name = "DEST", required = true)]
    dest: PathBuf,
    /// Listen on HOST:PORT (port 0 picks a free one).
    #[arg(
        long,
        value_name = "ADDR",
        required_unless_present_any = ["unix", "mcp_stdio"],
        conflicts_with = "unix"
    )]
    listen: Option<String>,
    /// Listen on a Unix domain socket instead (made readable by this user only).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// The tenants and their bearer tokens, a TOML file: per tenant a
    /// [[tenant]] table with name = "NAME", token = "TOKEN" (16 characters
    /// or more), and optionally max_concurrent = N (its guests running at
    /// once), max_memory = "256M" (the most memory of one of its guests),
    /// max_sessions = N (its sessions in memory at once) and
    /// cpu_seconds_per_minute = S (guest wall time per minute; past it,
    /// 429 QuotaExceeded with Retry-After).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["no_auth", "mcp_stdio"])]
    tokens: Option<PathBuf>,
    /// Take requests without tokens, as the one tenant "anonymous": only
    /// on a loopback address or a Unix socket.
    #[arg(long, conflicts_with = "tokens")]
    no_auth: bool,
    /// Speak MCP on stdin and stdout (one JSON-RPC message a line) to the
    /// client that started this process, as the one tenant "anonymous",
    /// instead of listening; stop when it closes stdin. Logs go to stderr.
    /// A mode of `serve` rather than a command of its own, so that every
    /// limit and store option below applies to it alike.
    #[arg(long, conflicts_with_all = ["listen", "unix", "tokens", "no_auth"])]
    mcp_stdio: bool,
    /// Guest runs at once, all tenants together [default: the number of cores].
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Requests of one tenant that may wait beyond those it has running;
    /// past them the server answers 429 with Retry-After [default: 2 x --max-concurrent].
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Sessions of one tenant in memory at once (idle ones saved to the
    /// store do not count); past them, creating one is answered 429.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_sessions: usize,
    /// Seconds without calls after which a session is saved to the store
    /// and dropped from memory; its next call restores it.
    #[arg(long, value_name = "SECONDS", default_value = "300")]
    session_idle: f64,
    /// Where idle sessions are saved [default: DEST/sessions]: a directory,
    /// or object storage as s3://BUCKET/PREFIX (also gs://, az://),
    /// configured by the usual AWS_* variables (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL for an
    /// S3-compatible server, AWS_ALLOW_HTTP=true for one without TLS),
    /// GOOGLE_* or AZURE_*. A server started later on the same store
    /// restores them.
    #[arg(long, value_name = "DIR|URL")]
    session_store: Option<PathBuf>,
    /// The most memory a request may give its guest (also what it gets
    /// when it asks for none), e.g. 256M.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    max_memory: String,
    /// The longest time limit, in seconds, of a run or of one session call.
    #[arg(long, value_name = "SECONDS", default_value = "3600")]
    max_timeout: f64,
    /// The most output (stdout and stderr together) of a run or a session.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    max_output: String,
    /// The largest request body; a larger one is answered 413.
    #[arg(long, value_name = "SIZE", default_value = "10M")]
    max_body: String,
    /// Seconds a shutdown (SIGTERM) waits for running requests.
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    grace: f64,
    /// Directory for compiled machine code [default: DEST/cache].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// How log lines on stderr are written: text (for people) or json (one
    /// object per line, for log collectors). Each request is one line with
    /// its request id, tenant, route, status, latency and outcome.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Do not answer GET /metrics (Prometheus counters, without tenant
    /// names; it takes no token).
    #[arg(long)]
    no_metrics: bool,
}

#[derive(Args)]
struct PipArgs {
    /// The install directory (made with `pynbox install DEST python`).
    #[arg(long, value_name = "DEST", required = true)]
    dest: PathBuf,
    #[command(subcommand)]
    cmd: PipCmd,
}

#[derive(Args)]
struct IndexArgs {
    /// The package index (simple API) [default: https://pypi.org/simple].
    #[arg(short = 'i', long, value_name = "URL")]
    index_url: Option<String>,
    /// A further index, searched as well.
    #[arg(long, value_name = "URL")]
    extra_index_url: Vec<String>,
    /// A local directory of wheels, searched as well.
    #[arg(short = 'f', long, value_name = "DIR")]
    find_links: Vec<PathBuf>,
    /// Use no index: only --find-links directories and the download cache.
    #[arg(long)]
    no_index: bool,
    /// Accept a plain http:// index on any host (loopback is always accepted).
    #[arg(long)]
    allow_insecure_http: bool,
}

/// How a change to DEST is carried out (install and sync).
#[derive(Args)]
struct ChangeArgs {
    /// Do not make the pre-initialised python again after the change (it
    /// takes about 20 s): runs start without it until `pynbox install DEST`.
    #[arg(long)]
    no_preinit: bool,
    /// Do not compile .pyc files at install (inside the sandbox).
    #[arg(long)]
    no_compile: bool,
    /// Wall-clock limit in seconds of one source distribution's build
    /// inside the sandbox [default: 600].
    #[arg(long, value_name = "SECONDS")]
    build_timeout: Option<u64>,
}

#[derive(Subcommand)]
enum PipCmd {
    /// Install distributions and what they require.
    Install {
        /// PEP 508 requirements, e.g. 'requests>=2.31' or 'attrs[tests]'.
        requirements: Vec<String>,
        /// Requirements from a file (pip's format), or a pylock.toml to reproduce.
        #[arg(short = 'r', long = "requirement", value_name = "FILE")]
        requirement_files: Vec<PathBuf>,
        /// Constraints from a file: they narrow versions without asking for an install.
        #[arg(short = 'c', long = "constraint", value_name = "FILE")]
        constraint_files: Vec<PathBuf>,
        #[command(flatten)]
        index: IndexArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// Install only the named distributions, not what they require.
        #[arg(long)]
        no_deps: bool,
        /// Take the newest versions, even of installed distributions.
        #[arg(short = 'U', long)]
        upgrade: bool,
        /// Consider pre-releases and development versions.
        #[arg(long)]
        pre: bool,
        /// Require ==VERSION and --hash=sha256:... (in -r files) for every
        /// distribution, dependencies too.
        #[arg(long)]
        require_hashes: bool,
    },
    /// Remove distributions installed from an index (exactly their files).
    Uninstall {
        #[arg(required = true)]
        names: Vec<String>,
        /// Accepted for pip's sake: pynbox never asks.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Do not make the pre-initialised python again (see install --help).
        #[arg(long)]
        no_preinit: bool,
    },
    /// Make DEST hold exactly the distributions of a pylock.toml.
    Sync {
        /// The lock file (DEST/pylock.toml is written after every change).
        lock: PathBuf,
        /// Only from the download cache: no network.
        #[arg(long)]
        no_index: bool,
        #[arg(long)]
        allow_insecure_http: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List the distributions installed from indexes.
    List,
    /// Print them as requirements (NAME==VERSION).
    Freeze,
}

/// Arguments of `pynbox run`. `-h` forwards a descriptor, as in NaCl's
/// sel_ldr, so help is `--help` only.
#[derive(Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  \
      pynbox run -m ./root:/:ro root/python/bin/python.wasm -c 'print(1)'\n  \
      pynbox run -m ./root:/:ro -m ./work:/work:rw python /work/job.py\n  \
      pynbox run -m ./root:/:ro -h 3:3 -h 4:4 python /app/engine.py 3<in.pipe 4>out.pipe\n  \
      pynbox run --memory 256M --timeout 10 --max-output 1M prog.wasm\n\n\
      Exit status: the guest's own; 124 time limit; 137 memory limit; 153 output limit; \
      134 the guest crashed (a wasm trap); 2 a mistake in the command line; \
      125 pynbox itself failed.\n\
      Set VERBOSE=1 to print the full equivalent command line before running."
)]
struct RunArgs {
    /// Mount HOST_DIR at VIRT_DIR in the guest, read-only (ro) or read-write (rw).
    /// Repeatable; mounts may nest (e.g. / read-only with /data read-write).
    #[arg(short = 'm', value_name = "HOST_DIR:VIRT_DIR:ro|rw")]
    mounts: Vec<String>,

    /// The mount to use when no -m is given (used by an install's bin/run).
    #[arg(long, value_name = "HOST_DIR:VIRT_DIR:ro|rw")]
    default_mount: Option<String>,

    /// Give the guest the host's open descriptor HOST_FD as GUEST_FD (Unix).
    #[arg(short = 'h', value_name = "HOST_FD:GUEST_FD")]
    host_fds: Vec<String>,

    /// Open FILE for reading and give it to the guest as GUEST_FD.
    #[arg(short = 'r', value_name = "GUEST_FD:FILE")]
    read_fds: Vec<String>,

    /// Create (or truncate) FILE for writing and give it to the guest as GUEST_FD.
    #[arg(short = 'w', value_name = "GUEST_FD:FILE")]
    write_fds: Vec<String>,

    /// Set a guest environment variable (none of the host's are passed).
    #[arg(short = 'E', value_name = "NAME=VALUE")]
    env: Vec<String>,

    /// Cap on the guest's memory, e.g. 256M or 2G; "none" for the wasm32 maximum (4G).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    memory: String,

    /// Wall-clock limit in seconds (fractions allowed); "none" for no limit.
    #[arg(long, value_name = "SECONDS", default_value = "3600")]
    timeout: String,

    /// Cap on what the guest writes to stdout, stderr and forwarded
    /// descriptors together, e.g. 10M; "none" for no limit.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    max_output: String,

    /// Files below the mounts the guest may hold open at once (each costs
    /// pynbox a host descriptor); past it the guest's open fails with EMFILE.
    #[arg(long, value_name = "N", default_value_t = pynbox::runtime::Limits::default().open_files)]
    open_files: usize,

    /// Let the guest create symbolic links in read-write mounts (refused by
    /// default: a link left behind could mislead host programs).
    #[arg(long)]
    allow_symlinks: bool,

    /// Do not confine pynbox's own process with Landlock and seccomp (for
    /// debugging; the guest is still confined by Wasmtime).
    #[arg(long, conflicts_with = "require_os_sandbox")]
    no_os_sandbox: bool,

    /// Refuse to run where the kernel cannot confine pynbox's own process
    /// with both Landlock and seccomp (by default the run goes on with a
    /// one-line notice).
    #[arg(long)]
    require_os_sandbox: bool,

    /// Resolve PROGRAM inside the mounts (a guest path such as
    /// /test/native.wasm) instead of on the host. `python` always means
    /// /python/bin/python.wasm in the mounts.
    #[arg(long)]
    guest_program: bool,

    /// The guest path that `python` names [default: /python/bin/python.wasm].
    #[arg(long, value_name = "GUEST_PATH")]
    python: Option<String>,

    /// A pre-initialised python (made by `pynbox install`, passed by bin/run)
    /// to start `python` from, when it was made from the very interpreter
    /// this run would load and the command line allows it (plain -c, -m or a
    /// script; no PYTHON* or locale variables). Other runs ignore it.
    #[arg(long, value_name = "FILE")]
    preinit: Option<PathBuf>,

    /// The install (`pynbox install DEST ...`, passed by bin/run) whose
    /// native modules python may import: the `.so` files its packages
    /// placed, checked against their recorded sha256 when loaded. Without
    /// it no native module can be loaded; a module written inside the
    /// sandbox never can.
    #[arg(long, value_name = "DEST")]
    native_modules: Option<PathBuf>,

    /// Also load native modules that no install placed: ones the guest wrote
    /// into a read-write mount or was given. They are still wasm, confined
    /// like python itself, but their code is the guest's choice and is
    /// compiled while the run goes on, which the second wall forbids: needs
    /// --no-os-sandbox. See SECURITY.md.
    #[arg(long, requires = "no_os_sandbox")]
    allow_any_native_module: bool,

    /// Directory for compiled machine code [default: $PYNBOX_CACHE_DIR, else
    /// $XDG_CACHE_HOME/pynbox/modules, else ~/.cache/pynbox/modules].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,

    /// The program (a .wasm file, or `python`) and its arguments.
    #[arg(value_name = "PROGRAM", required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    command: Vec<String>,
}

use pynbox::install::PYTHON;

/// `DEST/bin/run` is this executable (a hard link of `bin/pynbox`, made by
/// `pynbox install`), so that a run starts without a shell in front (a
/// script cost about 1.2 ms of every run). Invoked by that name inside an
/// install, it is `pynbox run` with the install's options, and with no
/// arguments it says how to use it.
fn as_bin_run() -> Option<Vec<std::ffi::OsString>> {
    // The file executed, whatever name a symlink to it had (from /proc;
    // without /proc, the name it was started by).
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(_) => std::fs::canonicalize(std::env::args_os().next()?).ok()?,
    };
    if exe.file_name()? != "run" {
        return None;
    }
    let dest = exe.parent()?.parent()?.to_path_buf();
    if !dest.join("packages/runner.installed").is_file() {
        return None;
    }
    let mut args: Vec<std::ffi::OsString> = vec!["pynbox".into(), "run".into()];
    let given: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if given.is_empty() {
        let shown = std::env::args()
            .next()
            .unwrap_or_else(|| exe.display().to_string());
        println!("Usage: {shown} [OPTIONS] PROGRAM [ARGS...]");
        println!();
        println!("Runs PROGRAM in this sandbox: 'python' (the installed interpreter, interactive");
        println!("with no arguments), or a path inside the sandbox such as /test/test_pynbox_native.wasm.");
        println!(
            "Default mount, used when no -m is given: {}/root:/:ro",
            dest.display()
        );
        println!();
        args.push("--help".into());
        return Some(args);
    }
    let d = dest.display();
    for a in [
        "--default-mount".to_string(),
        format!("{d}/root:/:ro"),
        "--guest-program".to_string(),
        "--cache-dir".to_string(),
        format!("{d}/cache"),
        "--preinit".to_string(),
        format!("{d}/{}", pynbox::preinit::INSTALL_PATH),
        "--native-modules".to_string(),
        d.to_string(),
    ] {
        args.push(a.into());
    }
    args.extend(given);
    Some(args)
}

fn main() -> ExitCode {
    let parsed = match as_bin_run() {
        Some(args) => Cli::try_parse_from(args),
        None => Cli::try_parse(),
    };
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(EXIT_USAGE);
            }
            // One line that says what is wrong, and where to read more.
            let text = e.render().to_string();
            // The message, with its indented details (missing argument
            // names), up to the first blank line.
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let msg = msg.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("pynbox: {msg} (see pynbox --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::Build { packages, recipes } => build(packages, recipes),
        Cmd::Install {
            dest,
            packages,
            repo,
            allow_insecure_http,
        } => install(&dest, &packages, repo, allow_insecure_http),
        Cmd::List { dest } => list(&dest),
        Cmd::Verify { dest } => verify(&dest),
        Cmd::Pip(args) => pip(args),
        Cmd::Serve(args) => serve(args),
        Cmd::Remove { dest, packages } => {
            let mut log = |l: &str| eprintln!("{l}");
            match pynbox::install::remove(&dest, &packages, &mut log) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(ErrorKind::Input, e),
            }
        }
    }
}

fn build(mut packages: Vec<String>, recipes: Option<PathBuf>) -> ExitCode {
    let env = match pynbox::recipes::BuildEnv::discover(recipes) {
        Ok(e) => e,
        Err(e) => return usage(e),
    };
    if packages.is_empty() {
        packages = env.available();
    }
    for p in &packages {
        match pynbox::recipes::build(&env, p) {
            Ok(b) => eprintln!("{p}: {}", b.archive.display()),
            Err(e) => {
                eprintln!("pynbox: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn default_repo() -> Result<pynbox::install::Repo, String> {
    let env = pynbox::recipes::BuildEnv::discover(None).map_err(|_| {
        "no package repository: give --repo DIR|URL, or run inside the pynbox checkout to use build/packages".to_string()
    })?;
    Ok(pynbox::install::Repo::Dir(env.out.join("packages")))
}

fn install(
    dest: &std::path::Path,
    packages: &[String],
    repo: Option<String>,
    allow_insecure_http: bool,
) -> ExitCode {
    let repo = match repo {
        Some(r) => pynbox::install::Repo::parse(&r, allow_insecure_http),
        None => match default_repo() {
            Ok(r) => r,
            Err(e) => return usage(e),
        },
    };
    let mut log = |l: &str| eprintln!("{l}");
    match pynbox::install::install(dest, packages, &repo, &mut log) {
        Ok(()) => {
            eprintln!("ready: {}/bin/run python", dest.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pynbox: {e}");
            ExitCode::from(1)
        }
    }
}

fn pip(a: PipArgs) -> ExitCode {
    let mut log = |l: &str| eprintln!("{l}");
    let dest = a.dest.as_path();
    let r = match a.cmd {
        PipCmd::Install {
            requirements,
            requirement_files,
            constraint_files,
            index,
            change,
            no_deps,
            upgrade,
            pre,
            require_hashes,
        } => {
            let opts = pynbox::pypi::Options {
                requirements,
                requirement_files,
                constraint_files,
                index_url: index.index_url,
                extra_index_urls: index.extra_index_url,
                find_links: index.find_links,
                no_index: index.no_index,
                no_deps,
                upgrade,
                pre,
                allow_insecure_http: index.allow_insecure_http,
                no_preinit: change.no_preinit,
                no_compile: change.no_compile,
                build_timeout: change.build_timeout,
                require_hashes,
            };
            pynbox::pypi::install(dest, &opts, &mut log)
        }
        PipCmd::Uninstall {
            names,
            yes: _,
            no_preinit,
        } => pynbox::pypi::uninstall(dest, &names, no_preinit, &mut log),
        PipCmd::Sync {
            lock,
            no_index,
            allow_insecure_http,
            change,
        } => pynbox::pypi::sync(
            dest,
            &lock,
            no_index,
            allow_insecure_http,
            pynbox::pypi::Flags {
                no_preinit: change.no_preinit,
                no_compile: change.no_compile,
                build_timeout: change.build_timeout,
            },
            &mut log,
        ),
        PipCmd::List => pynbox::pypi::list(dest).map(|l| {
            let w = l.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(7);
            println!("{:<w$} Version", "Package");
            for (n, v) in l {
                println!("{n:<w$} {v}");
            }
        }),
        PipCmd::Freeze => pynbox::pypi::list(dest).map(|l| {
            for (n, v) in l {
                println!("{n}=={v}");
            }
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pynbox: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(a: ServeArgs) -> ExitCode {
    let size = |flag: &str, v: &str| match parse_size(v) {
        Ok(Some(0)) => Err(format!("--{flag}: give a positive size, or none")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("--{flag}: {e}")),
    };
    let secs = |flag: &str, v: f64| {
        Duration::try_from_secs_f64(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--{flag}: give a number of seconds greater than 0"))
    };
    let config = (|| -> Result<pynbox::serve::Config, String> {
        let tenants = match &a.tokens {
            Some(p) => Some(pynbox::serve::auth::load(p)?),
            None => None,
        };
        let max_concurrent = a
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let max_body = size("max-body", &a.max_body)?.unwrap_or(u64::MAX);
        Ok(pynbox::serve::Config {
            listen: match (&a.listen, &a.unix) {
                (Some(l), _) => pynbox::serve::Listen::Tcp(l.clone()),
                (None, Some(u)) => pynbox::serve::Listen::Unix(u.clone()),
                (None, None) if a.mcp_stdio => pynbox::serve::Listen::Stdio,
                (None, None) => return Err("give --listen ADDR, --unix PATH or --mcp-stdio".into()),
            },
            tenants,
            max_concurrent,
            queue: a.queue.unwrap_or(2 * max_concurrent),
            max_sessions: a.max_sessions,
            session_idle: secs("session-idle", a.session_idle)?,
            session_store: match &a.session_store {
                Some(s) => pynbox::serve::store::Location::parse(s.as_os_str())?,
                None => pynbox::serve::store::Location::Dir(a.dest.join("sessions")),
            },
            max_limits: Limits {
                memory: size("max-memory", &a.max_memory)?,
                timeout: Some(secs("max-timeout", a.max_timeout)?),
                max_output: size("max-output", &a.max_output)?,
                ..Limits::default()
            },
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            grace: secs("grace", a.grace)?,
            cache_dir: a.cache_dir.clone(),
            dest: a.dest.clone(),
            log_format: a
                .log_format
                .parse()
                .map_err(|e| format!("--log-format: {e}"))?,
            metrics: !a.no_metrics,
        })
    })();
    let config = match config {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    match pynbox::serve::serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(ErrorKind::Input, e),
    }
}

fn list(dest: &std::path::Path) -> ExitCode {
    let receipts = match pynbox::install::Dest::open(dest, false).and_then(|d| d.receipts()) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    for r in receipts {
        println!("{:<12} {:<14} {} files", r.name, r.version, r.files.len());
    }
    ExitCode::SUCCESS
}

fn verify(dest: &std::path::Path) -> ExitCode {
    let d = match pynbox::install::Dest::open(dest, false) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let receipts = match d.receipts() {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let mut bad = 0;
    for r in &receipts {
        let problems = pynbox::install::verify_receipt(&d, r);
        if problems.is_empty() {
            println!("{} {}: ok ({} files)", r.name, r.version, r.files.len());
        } else {
            bad += problems.len();
            for p in problems {
                println!("{} {}: {p}", r.name, r.version);
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "pynbox: {bad} installed files changed or missing: reinstall the packages named above"
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn fail(kind: ErrorKind, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("pynbox: {msg}");
    ExitCode::from(match kind {
        ErrorKind::Input => EXIT_USAGE,
        ErrorKind::Internal => EXIT_INTERNAL,
    })
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    fail(ErrorKind::Input, msg)
}

fn run(a: RunArgs) -> ExitCode {
    let mut mount_specs = a.mounts.clone();
    if mount_specs.is_empty() {
        mount_specs.extend(a.default_mount.clone());
    }
    let mut mounts = Vec::new();
    for m in &mount_specs {
        match MountSpec::parse(m) {
            Ok(m) => mounts.push(m),
            Err(e) => return usage(e),
        }
    }
    let mut fds = Vec::new();
    for s in &a.host_fds {
        match FdSpec::parse_host(s) {
            Ok(f) => fds.push(f),
            Err(e) => return usage(e),
        }
    }
    for (list, write) in [(&a.read_fds, false), (&a.write_fds, true)] {
        for s in list {
            match FdSpec::parse_file(s, write) {
                Ok(f) => fds.push(f),
                Err(e) => return usage(e),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for f in &fds {
        if !seen.insert(f.guest_fd) {
            return usage(format!(
                "guest descriptor {} is given twice: forward one thing per descriptor",
                f.guest_fd
            ));
        }
    }
    // Before pynbox opens anything of its own, so that no descriptor of
    // pynbox's can stand in for one the caller forgot to open.
    let host_fds = match pynbox::descriptors::take_host_fds(&fds) {
        Ok(h) => h,
        Err(e) => return usage(e),
    };
    let mut env = Vec::new();
    for e in &a.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => return usage(format!("-E '{e}': expected NAME=VALUE")),
        }
    }
    let memory = match parse_size(&a.memory) {
        Ok(m) => m,
        Err(e) => return usage(format!("--memory: {e}")),
    };
    let max_output = match parse_size(&a.max_output) {
        Ok(m) => m,
        Err(e) => return usage(format!("--max-output: {e}")),
    };
    let timeout = if a.timeout.eq_ignore_ascii_case("none") {
        None
    } else {
        match a
            .timeout
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            Some(d) => Some(d),
            _ => {
                return usage(format!(
                    "--timeout '{}': give a number of seconds greater than 0, or none",
                    a.timeout
                ))
            }
        }
    };
    let limits = Limits {
        memory,
        timeout,
        max_output,
        open_files: a.open_files,
    };

    let (program, guest_args) = a.command.split_first().expect("clap requires PROGRAM");
    // Options after PROGRAM belong to the guest; one before it that clap
    // did not know lands here.
    if program.starts_with('-') {
        return usage(format!(
            "unknown option '{program}' (see pynbox run --help)"
        ));
    }
    if std::env::var_os("VERBOSE").is_some_and(|v| v != "0" && !v.is_empty()) {
        eprintln!(
            "{}",
            equivalent_command(&a, &mount_specs, program, guest_args)
        );
    }

    let cache_dir = a.cache_dir.clone().or_else(Runtime::default_cache_dir);
    // Forwarded files are opened before the process is confined.
    let mut files = Vec::new();
    for f in fds
        .iter()
        .filter(|f| !matches!(f.source, pynbox::FdSource::Host(_)))
    {
        match f.open() {
            Ok((file, read, write)) => files.push((f.guest_fd, file, read, write)),
            Err(e) => return usage(e),
        }
    }
    let verbose = std::env::var_os("VERBOSE").is_some_and(|v| v != "0" && !v.is_empty());
    // What the install placed, read while its receipts are still readable.
    let read_started = std::time::Instant::now();
    let installed = match &a.native_modules {
        Some(dest) => match pynbox::native::Installed::read(dest) {
            Ok(i) => i,
            Err(e) => return usage(format!("--native-modules: {e}")),
        },
        None => pynbox::native::Installed::none(),
    };
    pynbox::runtime::timing("read the installed native modules", read_started);
    let installed = if a.allow_any_native_module {
        installed.allowing_any()
    } else {
        installed
    };
    // The second wall, file access first: before any thread starts, so that
    // every thread is confined even where Landlock cannot reach threads
    // already running.
    let mut walls = None;
    if !a.no_os_sandbox {
        let mut lock = LockDown::new();
        for m in &mounts {
            lock = lock.mount(m);
        }
        if let Some(dir) = &cache_dir {
            // The cache must exist to be kept writable.
            let _ = std::fs::create_dir_all(dir);
            lock = lock.write(dir);
        }
        if !(program == "python" || a.guest_program) {
            lock = lock.read(program.as_str());
        }
        if let Some(p) = &a.preinit {
            lock = lock.read(p);
        }
        let t = std::time::Instant::now();
        match lock.apply_landlock() {
            Ok(r) => walls = Some(r),
            Err(e) => return fail(e.kind(), e),
        }
        pynbox::runtime::timing("Landlock", t);
    }
    // One guest per process: no epoch checks in its code; the library
    // ends the process at the time limit.
    let runtime = match Runtime::with_interruption(cache_dir, pynbox::Interruption::EndProcess) {
        Ok(r) => r,
        Err(e) => return fail(e.kind(), e),
    };
    let started = std::time::Instant::now();
    // The installed native modules' code is mapped now, before the second
    // wall forbids new executable memory, on a thread of its own while
    // this one loads the program (both are mostly waiting on the kernel).
    let native = pynbox::native::NativeModules::new(&runtime, installed);
    let preloading = (!native.is_empty()).then(|| {
        let native = native.clone();
        std::thread::spawn(move || native.preload())
    });
    let in_guest = program == "python" || a.guest_program;
    let (loaded, arg0) = if in_guest {
        let guest_path = if program == "python" {
            a.python.clone().unwrap_or_else(|| PYTHON.to_string())
        } else if program.starts_with('/') {
            program.clone()
        } else {
            format!("/{program}")
        };
        let file = match pynbox::mounts::open_guest_file(&mounts, &guest_path) {
            Ok(Ok(f)) => f,
            Err(e) => return usage(e),
            Ok(Err(e)) => {
                let hint = if program == "python" {
                    "install the python package (pynbox install DEST python) and mount its root"
                } else {
                    "give a path inside the mounts"
                };
                return usage(format!("program '{program}': {e}: {hint}"));
            }
        };
        let preinit = a.preinit.as_deref().filter(|p| {
            program == "python"
                && pynbox::preinit::made_from(p, &file)
                && pynbox::preinit::resumable(guest_args, &env)
        });
        match preinit {
            Some(p) => (runtime.load_file(p), guest_path),
            None => (runtime.load_open_file(&guest_path, file), guest_path),
        }
    } else {
        (runtime.load_file(program.as_ref()), program.clone())
    };
    let program = match loaded {
        Ok(p) => p,
        Err(e) => return fail(e.kind(), e),
    };
    pynbox::runtime::timing("read and load the program", started);

    if let Some(p) = preloading {
        let _ = p.join();
    }
    pynbox::runtime::timing("map the native modules' code", started);

    let mut sandbox = Sandbox::new(&program)
        .native_modules(native)
        .arg0(&arg0)
        .args(guest_args.iter().cloned())
        .stdin(Input::Inherit)
        .stdout(Output::Inherit)
        .stderr(Output::Inherit)
        .limits(limits)
        .allow_symlinks(a.allow_symlinks);
    for m in mounts {
        sandbox = sandbox.mount(m);
    }
    for (k, v) in &env {
        sandbox = sandbox.env(k, v);
    }
    for (guest_fd, file, read, write) in host_fds.into_iter().chain(files) {
        sandbox = sandbox.file(guest_fd, file, read, write);
    }
    // Then the system calls, now that the program is loaded and nothing
    // more needs compiling.
    if let Some(report) = walls.as_mut() {
        let t = std::time::Instant::now();
        match LockDown::apply_seccomp() {
            Ok(n) => report.seccomp_allowed = n,
            Err(e) => return fail(e.kind(), e),
        }
        pynbox::runtime::timing("seccomp", t);
        if verbose {
            eprintln!("pynbox: os sandbox: {report}");
        }
        if !report.complete() {
            if a.require_os_sandbox {
                return fail(
                    ErrorKind::Internal,
                    format!(
                        "this kernel cannot confine pynbox's process ({report}); \
                         --require-os-sandbox refuses to run without both walls"
                    ),
                );
            }
            eprintln!(
                "pynbox: notice: the process runs without part of its second wall ({report}); \
                 --require-os-sandbox refuses such runs, --no-os-sandbox hides this notice"
            );
        }
    }
    if let Some(t) = timeout {
        start_watchdog(t);
    }
    let started = std::time::Instant::now();
    let result = match sandbox.run() {
        Ok(r) => r,
        Err(e) => return fail(e.kind(), e),
    };
    pynbox::runtime::timing("whole run", started);
    report(&result.status, &limits);
    ExitCode::from(result.status.exit_code() as u8)
}

/// The guest can block in a host read (stdin, a pipe) where no epoch check
/// runs. Past the limit plus a grace period, end the whole process.
fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit.saturating_add(Duration::from_secs(1)));
        eprintln!(
            "pynbox: time limit of {} s reached (--timeout)",
            limit.as_secs_f64()
        );
        std::process::exit(124);
    });
}

fn report(status: &Status, limits: &Limits) {
    match status {
        Status::Exited(_) => {}
        Status::TimeLimit => eprintln!(
            "pynbox: time limit of {} s reached (--timeout)",
            limits.timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)
        ),
        Status::MemoryLimit => eprintln!(
            "pynbox: memory limit of {} reached (--memory)",
            human(limits.memory.unwrap_or(pynbox::runtime::MAX_MEMORY))
        ),
        Status::OutputLimit => eprintln!(
            "pynbox: output limit of {} reached (--max-output)",
            human(limits.max_output.unwrap_or(0))
        ),
        Status::Crashed(why) => eprintln!("pynbox: the guest crashed: {why}"),
    }
}

fn human(n: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n} bytes")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn equivalent_command(a: &RunArgs, mounts: &[String], program: &str, args: &[String]) -> String {
    let mut parts = vec!["pynbox".to_string(), "run".to_string()];
    for m in mounts {
        parts.extend(["-m".into(), shell_quote(m)]);
    }
    for (flag, list) in [
        ("-h", &a.host_fds),
        ("-r", &a.read_fds),
        ("-w", &a.write_fds),
        ("-E", &a.env),
    ] {
        for v in list {
            parts.extend([flag.to_string(), shell_quote(v)]);
        }
    }
    parts.extend(["--memory".into(), shell_quote(&a.memory)]);
    parts.extend(["--timeout".into(), shell_quote(&a.timeout)]);
    parts.extend(["--max-output".into(), shell_quote(&a.max_output)]);
    if a.allow_symlinks {
        parts.push("--allow-symlinks".into());
    }
    if a.guest_program {
        parts.push("--guest-program".into());
    }
    if let Some(p) = &a.python {
        parts.extend(["--python".into(), shell_quote(p)]);
    }
    if let Some(p) = &a.preinit {
        parts.extend(["--preinit".into(), shell_quote(&p.display().to_string())]);
    }
    parts.push(shell_quote(program));
    parts.extend(args.iter().map(|s| shell_quote(s)));
    parts.join(" ")
}
