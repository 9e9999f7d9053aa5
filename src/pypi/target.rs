//! What the sandbox's interpreter is, as PyPI metadata asks it: the PEP 508
//! marker environment, `Requires-Python`, and which wheel tags it can
//! install. Everything is answered for CPython 3.13 on wasm32-wasip1, never
//! for the host that runs pynbox.

use pep508_rs::pep440_rs::{Version, VersionSpecifiers};
use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};

use crate::packages::{PackageError, Result};

/// The minor version of the sandbox's CPython: the python recipe builds
/// 3.13, and wheels are matched against it.
pub const PYTHON_MINOR: u64 = 13;

/// The interpreter that installed distributions will run on.
#[derive(Clone, Debug)]
pub struct Target {
    pub python: Version,
    pub markers: MarkerEnvironment,
}

impl Target {
    /// The target for the python package's version (`3.13.5-1`: the
    /// CPython version and pynbox's build number).
    pub fn for_python_package(package_version: &str) -> Result<Target> {
        let full = package_version.split('-').next().unwrap_or(package_version);
        let python: Version = full.parse().map_err(|e| {
            PackageError(format!(
                "the installed python package has version '{package_version}', not a Python version: {e}"
            ))
        })?;
        if python.release().get(..2) != Some(&[3, PYTHON_MINOR][..]) {
            return Err(PackageError(format!(
                "the installed python is {python}; pynbox pip installs for Python 3.{PYTHON_MINOR}"
            )));
        }
        let short = format!("3.{PYTHON_MINOR}");
        // What CPython reports on wasm32-wasip1 (checked inside the
        // sandbox: `platform.system()` and `os.uname()` come from
        // wasi-libc's uname, whose sysname is "wasi" and release "0.0.0").
        let markers = MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: full,
            os_name: "posix",
            platform_machine: "wasm32",
            platform_python_implementation: "CPython",
            platform_release: "0.0.0",
            platform_system: "wasi",
            platform_version: "0.0.0",
            python_full_version: full,
            python_version: &short,
            sys_platform: "wasi",
        })
        .map_err(|e| PackageError(format!("marker environment: {e}")))?;
        Ok(Target { python, markers })
    }

    /// Whether a `Requires-Python` specifier admits the sandbox's Python.
    /// One that does not parse admits nothing: pip skips such files too.
    pub fn requires_python_ok(&self, spec: &str) -> bool {
        let spec = spec.trim();
        if spec.is_empty() {
            return true;
        }
        match spec.parse::<VersionSpecifiers>() {
            Ok(s) => s.contains(&self.python),
            Err(_) => false,
        }
    }
}

/// Whether a wheel's tags (each possibly a `.`-joined set, as in
/// `py2.py3-none-any`) name a wheel that the sandbox can use: pure Python
/// (`none` ABI, `any` platform) for Python 3 up to 3.13. Platform wheels
/// (`cp313-cp313-manylinux...`) hold machine code for other machines.
pub fn wheel_tags_ok(python: &str, abi: &str, platform: &str) -> bool {
    let py_ok = python.split('.').any(|t| {
        t == "py3"
            || t.strip_prefix("py3")
                .and_then(|m| m.parse::<u64>().ok())
                .is_some_and(|m| m <= PYTHON_MINOR)
    });
    py_ok && abi.split('.').any(|t| t == "none") && platform.split('.').any(|t| t == "any")
}

/// The parts of a wheel's file name
/// (`{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelName {
    pub name: String,
    pub version: Version,
    pub python: String,
    pub abi: String,
    pub platform: String,
}

impl WheelName {
    pub fn parse(file: &str) -> Option<WheelName> {
        let stem = file.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, tags) = match parts.len() {
            5 => (parts[0], parts[1], &parts[2..]),
            6 => (parts[0], parts[1], &parts[3..]),
            _ => return None,
        };
        Some(WheelName {
            name: normalize(name),
            version: version.parse().ok()?,
            python: tags[0].to_string(),
            abi: tags[1].to_string(),
            platform: tags[2].to_string(),
        })
    }

    pub fn usable(&self) -> bool {
        wheel_tags_ok(&self.python, &self.abi, &self.platform)
    }
}

/// The (normalized name, version) of a source distribution's file name,
/// when it is one.
pub fn sdist_name(file: &str) -> Option<(String, Version)> {
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalize(name), version.parse().ok()?))
}

/// A distribution name normalized as PEP 503 says: lowercase, every run of
/// `-`, `_` and `.` one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pep508_rs::Requirement;
    use std::str::FromStr;

    #[test]
    fn markers_are_the_sandboxs_not_the_hosts() {
        let t = Target::for_python_package("3.13.5-1").unwrap();
        let applies = |r: &str| {
            Requirement::<pep508_rs::VerbatimUrl>::from_str(r)
                .unwrap()
                .evaluate_markers(&t.markers, &[])
        };
        assert!(applies("a; sys_platform == 'wasi'"));
        assert!(!applies("a; sys_platform == 'win32'"));
        assert!(!applies("a; sys_platform == 'linux'"));
        assert!(applies(
            "a; os_name == 'posix' and platform_machine == 'wasm32'"
        ));
        assert!(applies("a; implementation_name == 'cpython'"));
        assert!(applies(
            "a; python_version >= '3.13' and python_version < '3.14'"
        ));
        assert!(applies("a; python_full_version == '3.13.5'"));
        assert!(!applies("a; python_version < '3.8'"));
        assert!(!applies("a; platform_system == 'Windows'"));
        assert!(applies("a; platform_system == 'wasi'"));
        assert!(!applies("a; extra == 'x'"));
        assert!(t.requires_python_ok(">=3.8"));
        assert!(t.requires_python_ok(">=3.8, <4"));
        assert!(!t.requires_python_ok(">=3.14"));
        assert!(!t.requires_python_ok("<3.13"));
        assert!(t.requires_python_ok(""));
        assert!(!t.requires_python_ok("not a specifier"));
        assert!(Target::for_python_package("3.12.1-1").is_err());
    }

    #[test]
    fn only_pure_python_3_wheels_fit() {
        for (py, abi, plat) in [
            ("py3", "none", "any"),
            ("py2.py3", "none", "any"),
            ("py313", "none", "any"),
            ("py38", "none", "any"),
            ("py30", "none", "any"),
        ] {
            assert!(wheel_tags_ok(py, abi, plat), "{py}-{abi}-{plat}");
        }
        for (py, abi, plat) in [
            ("py2", "none", "any"),
            ("py314", "none", "any"),
            ("cp313", "cp313", "manylinux_2_17_x86_64"),
            ("py3", "none", "win_amd64"),
            ("py3", "abi3", "any"),
            ("cp313", "none", "linux_x86_64"),
        ] {
            assert!(!wheel_tags_ok(py, abi, plat), "{py}-{abi}-{plat}");
        }
        let w = WheelName::parse("Foo_Bar-1.2.0-1-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.name, "foo-bar");
        assert_eq!(w.version.to_string(), "1.2.0");
        assert!(w.usable());
        assert!(
            WheelName::parse("foo-1.0-cp313-cp313-linux_x86_64.whl").is_some_and(|w| !w.usable())
        );
        assert_eq!(WheelName::parse("foo-1.0.tar.gz"), None);
        assert_eq!(
            sdist_name("Foo.Bar-2.0.tar.gz").map(|(n, v)| (n, v.to_string())),
            Some(("foo-bar".into(), "2.0".into()))
        );
        assert_eq!(normalize("Foo__Bar.-baz"), "foo-bar-baz");
    }
}
