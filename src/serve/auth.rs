//! Who may come in: the tokens file, and matching a request's bearer
//! token to its tenant in constant time.
//!
//! The file is TOML:
//!
//! ```toml
//! [[tenant]]
//! name = "spreadsheet"
//! token = "a long random string"
//! max_concurrent = 4      # optional: guest runs at once for this tenant
//! max_memory = "256M"     # optional: the most memory of one of its guests
//! max_sessions = 10       # optional: its sessions in memory at once
//! cpu_seconds_per_minute = 30  # optional: guest time per minute (quota.rs)
//! ```

use std::path::Path;

use serde::Deserialize;

/// One tenant: a name (it keys its sessions) and its quota.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// Guest runs of this tenant at once; `None`: the server's limit.
    pub max_concurrent: Option<usize>,
    /// The most memory one of this tenant's guests may have; `None`: the
    /// server's maximum.
    pub max_memory: Option<u64>,
    /// Sessions of this tenant in memory at once; `None`: the server's limit.
    pub max_sessions: Option<usize>,
    /// Seconds of guest wall time per minute; `None`: no such quota.
    pub cpu_seconds_per_minute: Option<f64>,
    /// blake3 of the token: what requests are compared with.
    digest: [u8; 32],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token: String,
    max_concurrent: Option<usize>,
    max_memory: Option<Size>,
    max_sessions: Option<usize>,
    cpu_seconds_per_minute: Option<f64>,
}

/// A size in bytes, or as text such as "256M".
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// Tokens shorter than this are refused: a server on a network must not
/// accept a guessable one.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tenants of a tokens file, checked: names and tokens unique, names
/// plain, tokens long enough.
pub fn load(path: &Path) -> Result<Vec<Tenant>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<Tenant>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.message().to_string())?;
    if file.tenant.is_empty() {
        return Err("no [[tenant]] entries: nobody could use the server".into());
    }
    let mut out: Vec<Tenant> = Vec::new();
    for e in file.tenant {
        if e.name.is_empty()
            || e.name.len() > 64
            || !e
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "tenant name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                e.name
            ));
        }
        if e.token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "tenant {}: the token is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)",
                e.name
            ));
        }
        if e.max_sessions == Some(0) {
            return Err(format!(
                "tenant {}: max_sessions = 0 would refuse every session",
                e.name
            ));
        }
        if e.max_concurrent == Some(0) {
            return Err(format!(
                "tenant {}: max_concurrent = 0 would refuse every run",
                e.name
            ));
        }
        let max_memory = match &e.max_memory {
            None => None,
            Some(Size::Bytes(n)) => Some(*n),
            Some(Size::Text(t)) => crate::parse_size(t)
                .map_err(|err| format!("tenant {}: max_memory: {err}", e.name))?,
        };
        if max_memory == Some(0) {
            return Err(format!("tenant {}: max_memory must be positive", e.name));
        }
        if let Some(q) = e.cpu_seconds_per_minute {
            if !(q.is_finite() && q > 0.0) {
                return Err(format!(
                    "tenant {}: cpu_seconds_per_minute must be a positive number of seconds",
                    e.name
                ));
            }
        }
        let digest = *blake3::hash(e.token.as_bytes()).as_bytes();
        if out.iter().any(|t| t.name == e.name) {
            return Err(format!("tenant {} is listed twice", e.name));
        }
        if out.iter().any(|t| t.digest == digest) {
            return Err(format!(
                "tenant {}: its token is another tenant's too",
                e.name
            ));
        }
        out.push(Tenant {
            name: e.name,
            max_concurrent: e.max_concurrent,
            max_memory,
            max_sessions: e.max_sessions,
            cpu_seconds_per_minute: e.cpu_seconds_per_minute,
            digest,
        });
    }
    Ok(out)
}

/// The tenant of a server run with `--no-auth`.
pub fn anonymous() -> Tenant {
    Tenant {
        name: "anonymous".into(),
        max_concurrent: None,
        max_memory: None,
        max_sessions: None,
        cpu_seconds_per_minute: None,
        digest: [0; 32],
    }
}

/// The tenant whose token is `token`. Every tenant is compared, each in
/// constant time over the token's digest, so the time taken says nothing
/// of how much of a token was right.
pub fn find<'a>(tenants: &'a [Tenant], token: &str) -> Option<&'a Tenant> {
    let digest = blake3::hash(token.as_bytes());
    let mut found = None;
    for t in tenants {
        if constant_time_eq(&t.digest, digest.as_bytes()) {
            found = Some(t);
        }
    }
    found
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_found() {
        let t = parse(
            "[[tenant]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[tenant]]\nname = \"b\"\ntoken = \"fedcba9876543210\"\nmax_concurrent = 2\n\
             max_memory = \"64M\"\n",
        )
        .unwrap();
        assert_eq!(find(&t, "0123456789abcdef").unwrap().name, "a");
        assert_eq!(
            find(&t, "fedcba9876543210").unwrap().max_concurrent,
            Some(2)
        );
        assert!(find(&t, "0123456789abcdeF").is_none());
        assert!(find(&t, "").is_none());
        assert!(parse("[[tenant]]\nname = \"a\"\ntoken = \"short\"\n").is_err());
        assert!(parse("[[tenant]]\nname = \"a b\"\ntoken = \"0123456789abcdef\"\n").is_err());
        assert!(parse("").is_err());
        assert!(parse(
            "[[tenant]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[tenant]]\nname = \"b\"\ntoken = \"0123456789abcdef\"\n"
        )
        .is_err());
        let q = |v: &str| {
            parse(&format!(
                "[[tenant]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\ncpu_seconds_per_minute = {v}\n"
            ))
            .map(|t| t[0].cpu_seconds_per_minute)
        };
        assert_eq!(q("30"), Ok(Some(30.0)));
        assert_eq!(q("0.5"), Ok(Some(0.5)));
        for bad in ["0", "-1", "nan", "inf", "\"30\""] {
            assert!(q(bad).is_err(), "{bad}");
        }
        assert_eq!(t[0].cpu_seconds_per_minute, None);
        assert_eq!(bearer("Bearer  xyz "), Some("xyz"));
        assert_eq!(bearer("Basic xyz"), None);
    }
}
