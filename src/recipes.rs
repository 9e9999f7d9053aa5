//! Recipes: building packages from source with `pynbox build`.
//!
//! A recipe is `recipes/NAME/package.json` (name, version, dependencies,
//! commands) and `recipes/NAME/build.sh`, which fills `$PYNBOX_OUT/root`
//! with the package's files. Each build is cached outside the checkout,
//! under a key made of every input file of the recipe (which pins its
//! sources by sha256) and the keys of the recipes it builds on: an
//! unchanged package is never rebuilt, and the archive comes from the
//! cache too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::packages::{self, check_name, check_version, Command, PackageError, Result};

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

/// `recipes/NAME/package.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeInfo {
    pub name: String,
    pub version: String,
    /// Packages that must be installed with this one.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Recipes whose build outputs this one uses (their cache entries are
    /// passed as `PYNBOX_DEP_<NAME>`).
    #[serde(default)]
    pub build_depends: Vec<String>,
    #[serde(default)]
    pub commands: BTreeMap<String, Command>,
    #[serde(default)]
    pub description: String,
}

/// Where recipes are read and builds are written.
#[derive(Clone, Debug)]
pub struct BuildEnv {
    pub recipes: PathBuf,
    /// The checkout's `build/` directory (`packages/`, `native-python/`).
    pub out: PathBuf,
    /// The cache root (`$PYNBOX_CACHE`, default `~/.cache/pynbox`).
    pub cache: PathBuf,
    pub jobs: usize,
}

impl BuildEnv {
    /// Finds `recipes/` from the current directory or the executable's
    /// location, and uses `build/` beside it.
    pub fn discover(recipes: Option<PathBuf>) -> Result<BuildEnv> {
        let recipes = match recipes {
            Some(r) => r,
            None => {
                let mut starts = Vec::new();
                if let Ok(d) = std::env::current_dir() {
                    starts.push(d);
                }
                if let Ok(e) = std::env::current_exe() {
                    starts.extend(e.parent().map(Path::to_path_buf));
                }
                starts
                    .iter()
                    .flat_map(|s| s.ancestors().map(|a| a.join("recipes")))
                    .find(|r| r.join("lib.sh").is_file())
                    .ok_or_else(|| {
                        PackageError(
                            "cannot find the recipes: run pynbox build inside the pynbox checkout, or give --recipes DIR".into(),
                        )
                    })?
            }
        };
        let recipes = recipes
            .canonicalize()
            .map_err(|e| PackageError(format!("recipes directory {}: {e}", recipes.display())))?;
        let out = recipes.parent().unwrap_or(Path::new(".")).join("build");
        let cache = std::env::var_os("PYNBOX_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pynbox")))
            .ok_or_else(|| PackageError("set PYNBOX_CACHE or HOME for the build cache".into()))?;
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(BuildEnv {
            recipes,
            out,
            cache,
            jobs,
        })
    }

    /// The recipes there are, by name.
    pub fn available(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.recipes)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("package.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn info(&self, name: &str) -> Result<RecipeInfo> {
        check_name(name)?;
        let p = self.recipes.join(name).join("package.json");
        let data = std::fs::read(&p).map_err(|_| {
            PackageError(format!(
                "there is no recipe for '{name}': available: {}",
                self.available().join(", ")
            ))
        })?;
        let info: RecipeInfo = serde_json::from_slice(&data)
            .map_err(|e| PackageError(format!("{}: {e}", p.display())))?;
        if info.name != name {
            return err(format!("{} names package '{}'", p.display(), info.name));
        }
        check_version(&info.version)?;
        Ok(info)
    }

    /// The cache key of recipe `name`: its files, the shared recipe files,
    /// and the keys of what it builds on.
    pub fn key(&self, name: &str) -> Result<String> {
        let info = self.info(name)?;
        let mut h = blake3::Hasher::new();
        let mut files = Vec::new();
        collect(&self.recipes.join(name), &mut files);
        for shared in ["lib.sh", "toolchain.sh", "toolchain-cxx.sh"] {
            files.push(self.recipes.join(shared));
        }
        files.sort();
        for f in files {
            let rel = f.strip_prefix(&self.recipes).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(&[0]);
            h.update(
                &std::fs::read(&f).map_err(|e| PackageError(format!("{}: {e}", f.display())))?,
            );
            h.update(&[0]);
        }
        for d in &info.build_depends {
            h.update(self.key(d)?.as_bytes());
        }
        Ok(h.finalize().to_hex()[..16].to_string())
    }

    fn entry(&self, name: &str, version: &str, key: &str) -> PathBuf {
        self.cache
            .join("build")
            .join(format!("{name}-{version}-{key}"))
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// What a build produced.
pub struct Built {
    pub archive: PathBuf,
    pub cached: bool,
}

/// Builds `name` (and what it builds on), leaving
/// `build/packages/NAME.VERSION.tar.zst`.
pub fn build(env: &BuildEnv, name: &str) -> Result<Built> {
    let info = env.info(name)?;
    for d in &info.build_depends {
        build(env, d)?;
    }
    let key = env.key(name)?;
    let entry = env.entry(name, &info.version, &key);
    let archive_name = format!("{name}.{}.tar.zst", info.version);
    let cached = entry.join("done").exists();
    if cached {
        eprintln!(
            "{name} {}: up to date (cached build {})",
            info.version,
            entry.display()
        );
    } else {
        run_recipe(env, &info, &key, &entry)?;
        eprintln!("[{name}] packing {archive_name}");
        packages::create_archive(
            &packages::PackageInfo {
                name: name.to_string(),
                version: info.version.clone(),
                depends: info.depends.clone(),
                commands: info.commands.clone(),
            },
            &entry.join("root"),
            &entry,
        )?;
        std::fs::write(entry.join("done"), b"")
            .map_err(|e| PackageError(format!("marking the build done: {e}")))?;
    }
    let pkgs = env.out.join("packages");
    std::fs::create_dir_all(&pkgs)
        .map_err(|e| PackageError(format!("creating {}: {e}", pkgs.display())))?;
    let dst = pkgs.join(&archive_name);
    let tmp = pkgs.join(format!(".{archive_name}.tmp"));
    std::fs::copy(entry.join(&archive_name), &tmp)
        .and_then(|_| std::fs::rename(&tmp, &dst))
        .map_err(|e| PackageError(format!("copying {archive_name} to {}: {e}", pkgs.display())))?;
    packages::write_index(&pkgs)?;
    if entry.join("native").is_dir() {
        link_native(env, name, &entry.join("native"))?;
    }
    Ok(Built {
        archive: dst,
        cached,
    })
}

/// `build/native-python` (for `python`) points at the native build in the
/// cache: a baseline for benchmarks, never installed.
fn link_native(env: &BuildEnv, name: &str, native: &Path) -> Result<()> {
    let link = env.out.join(format!("native-{name}"));
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&link);
    #[cfg(unix)]
    let r = std::os::unix::fs::symlink(native, &link);
    #[cfg(not(unix))]
    let r = std::fs::create_dir_all(&link);
    r.map_err(|e| PackageError(format!("linking {}: {e}", link.display())))
}

fn run_recipe(env: &BuildEnv, info: &RecipeInfo, key: &str, entry: &Path) -> Result<()> {
    let name = &info.name;
    let script = env.recipes.join(name).join("build.sh");
    if !script.is_file() {
        return err(format!("recipe {name} has no build.sh"));
    }
    let logs = env.cache.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| PackageError(format!("creating {}: {e}", logs.display())))?;
    let log = logs.join(format!("{name}-{}-{key}.log", info.version));
    let _ = std::fs::remove_file(&log);
    let work = entry.with_extension("partial");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("root"))
        .map_err(|e| PackageError(format!("creating {}: {e}", work.display())))?;

    let mut cmd = Process::new("bash");
    cmd.arg(&script)
        .env("PYNBOX_RECIPES", &env.recipes)
        .env("PYNBOX_CACHE", &env.cache)
        .env("PYNBOX_OUT", &work)
        .env("PYNBOX_VERSION", &info.version)
        .env("PYNBOX_JOBS", env.jobs.to_string())
        .env("PYNBOX_LOG", &log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for d in &info.build_depends {
        let dinfo = env.info(d)?;
        let dkey = env.key(d)?;
        cmd.env(
            format!("PYNBOX_DEP_{}", d.to_uppercase()),
            env.entry(d, &dinfo.version, &dkey),
        );
    }
    eprintln!(
        "[{name}] building {} {} (log: {})",
        name,
        info.version,
        log.display()
    );
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| PackageError(format!("cannot start bash for the {name} recipe: {e}")))?;
    let current = Arc::new(Mutex::new((String::from("starting"), Instant::now())));
    let done = Arc::new(AtomicBool::new(false));
    let ticker = std::io::stderr().is_terminal().then(|| {
        let current = current.clone();
        let done = done.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let (step, since) = current.lock().unwrap().clone();
                eprint!("\r\x1b[K[{name}] {step} ({}s)", since.elapsed().as_secs());
            }
            eprint!("\r\x1b[K");
        })
    });
    // The script's stderr should be empty (lib.sh sends it to the log);
    // whatever comes before that redirection is kept for the error message.
    let stderr = child.stderr.take().unwrap();
    let early = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let mut steps = 0;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
    {
        steps += 1;
        let mut cur = current.lock().unwrap();
        let prev = std::mem::replace(&mut *cur, (line.clone(), Instant::now()));
        drop(cur);
        if steps > 1 {
            finish_line(name, &prev.0, prev.1.elapsed(), ticker.is_some());
        }
    }
    let status = child
        .wait()
        .map_err(|e| PackageError(format!("waiting for the {name} recipe: {e}")))?;
    done.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let (last, since) = current.lock().unwrap().clone();
    let early = early.join().unwrap_or_default();
    if !status.success() {
        let tail = tail_lines(&log, 25);
        let mut msg = format!(
            "building {name} failed at step '{last}' ({}).",
            status
                .code()
                .map(|c| format!("exit status {c}"))
                .unwrap_or_else(|| "killed".into())
        );
        if !early.trim().is_empty() {
            msg.push_str(&format!("\n{}", early.trim_end()));
        }
        if !tail.is_empty() {
            msg.push_str(&format!("\nLast lines of the log:\n{tail}"));
        }
        msg.push_str(&format!("\nWhole log: {}", log.display()));
        return err(msg);
    }
    if steps > 0 {
        finish_line(name, &last, since.elapsed(), false);
    }
    let _ = std::fs::remove_dir_all(entry);
    std::fs::rename(&work, entry)
        .map_err(|e| PackageError(format!("storing the build in {}: {e}", entry.display())))?;
    eprintln!("[{name}] built in {}", human_duration(start.elapsed()));
    Ok(())
}

fn finish_line(name: &str, step: &str, took: Duration, tty: bool) {
    if tty {
        eprint!("\r\x1b[K");
    }
    eprintln!("[{name}] {step} ({})", human_duration(took));
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
