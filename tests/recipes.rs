//! The recipes' source pins: every pinned file matches its sha256 (fetched
//! from Debian's archive when not cached yet), and a wrong pin stops the
//! fetch with a message naming both hashes.

mod common;

use common::*;
use std::process::Command;

fn cache() -> String {
    std::env::var("PYNBOX_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/pynbox", std::env::var("HOME").unwrap()))
}

/// Runs `fetch_debian_source ARGS` from recipes/lib.sh.
fn fetch(args: &[&str]) -> std::process::Output {
    let log = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "source \"$PYNBOX_RECIPES/lib.sh\"; fetch_debian_source {} >&3",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("PYNBOX_RECIPES", repo().join("recipes"))
        .env("PYNBOX_CACHE", cache())
        .env("PYNBOX_LOG", log.path())
        .output()
        .unwrap();
    let mut out = out;
    // lib.sh sends messages to the log: show them with the output.
    out.stderr
        .extend(std::fs::read(log.path()).unwrap_or_default());
    out
}

/// The `add_source NAME SUITE PKG FILE SHA256 URL` pins of a recipe.
fn pins(recipe: &str) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(repo().join(recipe))
        .unwrap()
        .replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("add_source "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 6 && w[5].len() == 64).then(|| {
                (
                    w[2].to_string(),
                    w[3].to_string(),
                    w[4].to_string(),
                    w[5].to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn pinned_sources_match_their_hashes() {
    let pins = pins("recipes/python/build.sh");
    assert!(pins.len() >= 5, "found only {pins:?}");
    for (suite, pkg, file, sha) in pins {
        let out = fetch(&[&suite, &pkg, &file, &sha]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let path = text(&out.stdout).trim().to_string();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(pynbox::packages::sha256_hex(&data), sha, "{file}");
    }
}

#[test]
fn a_changed_hash_stops_the_fetch() {
    let wrong = "0".repeat(64);
    let out = fetch(&["trixie", "bzip2", "bzip2_1.0.8.orig.tar.gz", &wrong]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("sha256 mismatch for bzip2_1.0.8.orig.tar.gz"),
        "{err}"
    );
    assert!(err.contains(&format!("expected {wrong}")), "{err}");
    assert!(
        err.contains("actual   ab5a03176ee106d3f0fa90e381da478ddae405918153cca248e682cd0c4a2269"),
        "{err}"
    );
    // The good copy in the cache is untouched and nothing half-written stays.
    let dir = std::path::PathBuf::from(cache()).join("sources");
    assert!(!dir.join("bzip2_1.0.8.orig.tar.gz.part").exists());
}
