//! The recipes' source pins: every pinned file matches its sha256 (fetched
//! from Debian's archive only when not cached yet), and a wrong pin stops
//! the fetch with a message naming both hashes (tried on a local file, with
//! no network).

mod common;

use common::*;
use std::process::Command;

fn cache() -> String {
    std::env::var("PYNBOX_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/pynbox", std::env::var("HOME").unwrap()))
}

/// Runs `FUNCTION ARGS` from recipes/lib.sh, with its messages (which
/// lib.sh sends to its log) added to stderr.
fn lib_sh(function: &str, args: &[&str]) -> std::process::Output {
    let log = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "source \"$PYNBOX_RECIPES/lib.sh\"; {function} {} >&3",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut out = Command::new("bash")
        .args(["-c", &script])
        .env("PYNBOX_RECIPES", repo().join("recipes"))
        .env("PYNBOX_CACHE", cache())
        .env("PYNBOX_LOG", log.path())
        .output()
        .unwrap();
    out.stderr
        .extend(std::fs::read(log.path()).unwrap_or_default());
    out
}

fn fetch(args: &[&str]) -> std::process::Output {
    lib_sh("fetch_debian_source", args)
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

fn download_verified(args: &[&str]) -> std::process::Output {
    lib_sh("download_verified", args)
}

/// The check every fetch goes through, on a local file (no network): a
/// download whose sha256 differs from the pin stops with both hashes, and
/// the good copy already in the cache is left as it was.
#[test]
fn a_changed_hash_stops_the_fetch() {
    let d = tempfile::tempdir().unwrap();
    let fixture = d.path().join("fixture.tar.gz");
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&fixture, &data).unwrap();
    let actual = pynbox::packages::sha256_hex(&data);
    let uri = format!("file://{}", fixture.display());
    let cached = d.path().join("cache/pkg_1.0.orig.tar.gz");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, b"the good copy").unwrap();
    let cached_s = cached.display().to_string();

    let wrong = "0".repeat(64);
    let out = download_verified(&[&uri, &cached_s, &wrong, "a local fixture"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("sha256 mismatch for pkg_1.0.orig.tar.gz from a local fixture"),
        "{err}"
    );
    assert!(err.contains(&format!("expected {wrong}")), "{err}");
    assert!(err.contains(&format!("actual   {actual}")), "{err}");
    // The good copy in the cache is untouched and nothing half-written stays.
    assert_eq!(std::fs::read(&cached).unwrap(), b"the good copy");
    assert!(!d.path().join("cache/pkg_1.0.orig.tar.gz.part").exists());

    // With the right pin the download replaces it.
    let out = download_verified(&[&uri, &cached_s, &actual, "a local fixture"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&cached).unwrap(), data);
}
