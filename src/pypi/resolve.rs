//! Resolution with PubGrub: which release of every distribution to
//! install, so that all requirements hold together, with markers and
//! `Requires-Python` answered for the sandbox.
//!
//! An extra is a package of its own, `name[extra]`, that depends on `name`
//! at exactly its own version plus the extra's requirements (the way uv
//! models extras in PubGrub), so a conflict involving an extra is
//! explained like any other.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

use pep508_rs::pep440_rs::{Operator, Version};
use pep508_rs::{ExtraName, Requirement, VersionOrUrl};
use pubgrub::{
    DefaultStringReporter, Dependencies, DependencyConstraints, DependencyProvider,
    PackageResolutionStatistics, PubGrubError, Reporter,
};
use version_ranges::Ranges;

use super::build::{self, Builder};
use super::index::{FileInfo, Sources};
use super::target::{normalize, sdist_name, Target, WheelName};
use super::wheel::{parse_metadata, wheel_metadata, Metadata};
use crate::packages::{PackageError, Result};

/// A node of the resolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pkg {
    /// What the user asked for.
    Root,
    Dist(String),
    Extra(String, String),
}

impl fmt::Display for Pkg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pkg::Root => f.write_str("your request"),
            Pkg::Dist(n) => f.write_str(n),
            Pkg::Extra(n, e) => write!(f, "{n}[{e}]"),
        }
    }
}

/// One release of a distribution, with the wheel pynbox would install,
/// or else the sdist it would build.
#[derive(Clone, Debug)]
struct Release {
    version: Version,
    wheel: Option<FileInfo>,
    sdist: Option<FileInfo>,
    /// Files of this release pynbox cannot install (sdists, platform
    /// wheels), for the message when nothing else is left.
    others: Vec<String>,
    yanked: bool,
}

/// Requests and preferences that shape the resolution.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub pre: bool,
    pub no_deps: bool,
    pub offline: bool,
    /// `-c` files: ranges every requirement on the name is narrowed to.
    pub constraints: HashMap<String, Ranges<Version>>,
    /// Installed versions, kept when they still fit (no `--upgrade`).
    pub preferences: HashMap<String, Version>,
    /// Distributions that pynbox's own packages put into site-packages
    /// (the python package's tzdata): (version, package). They satisfy
    /// requirements at that version and are never installed from an index.
    pub provided: HashMap<String, (Version, String)>,
    /// `--hash` options of requirement files: the only files allowed.
    pub hashes: HashMap<String, HashSet<String>>,
}

/// A distribution chosen for installing.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub name: String,
    pub version: Version,
    /// The file to install: a pure wheel, or (when the release has none)
    /// an sdist that `build` makes one from.
    pub wheel: FileInfo,
    /// Normalized names of the chosen distributions it requires.
    pub depends: Vec<String>,
}

pub struct Resolver<'a> {
    sources: &'a Sources,
    target: &'a Target,
    policy: &'a Policy,
    root: Vec<Requirement>,
    /// Builds sdists of releases without a pure wheel; without one (for
    /// build requirements), only wheels are used.
    builder: Option<&'a Builder<'a>>,
    releases: RefCell<HashMap<String, Rc<Vec<Release>>>>,
    metadata: RefCell<HashMap<(String, Version), Rc<Metadata>>>,
    /// Why a distribution has nothing installable in the asked range.
    /// In the order found: the first is the cause (an older release of
    /// what required it, tried when backtracking, is found later).
    unusable: RefCell<Vec<(String, String)>>,
    /// Who first required a distribution, for the requirement chain.
    parents: RefCell<HashMap<String, (Pkg, Version)>>,
    allow_pre: RefCell<HashSet<String>>,
    pinned: RefCell<HashMap<String, HashSet<Version>>>,
    /// Distributions whose every file was left out by `--hash`.
    hash_filtered: RefCell<HashSet<String>>,
    /// Distributions with files left out by their `Requires-Python`.
    python_filtered: RefCell<HashSet<String>>,
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

impl<'a> Resolver<'a> {
    pub fn new(
        sources: &'a Sources,
        target: &'a Target,
        policy: &'a Policy,
        root: Vec<Requirement>,
        builder: Option<&'a Builder<'a>>,
    ) -> Self {
        Resolver {
            sources,
            target,
            policy,
            root,
            builder,
            releases: Default::default(),
            metadata: Default::default(),
            unusable: Default::default(),
            parents: Default::default(),
            allow_pre: Default::default(),
            pinned: Default::default(),
            hash_filtered: Default::default(),
            python_filtered: Default::default(),
        }
    }

    fn releases(&self, name: &str) -> Result<Rc<Vec<Release>>> {
        if let Some(r) = self.releases.borrow().get(name) {
            return Ok(r.clone());
        }
        let files = self.sources.files(name)?;
        let allowed = self.policy.hashes.get(name);
        let mut by_version: BTreeMap<Version, Release> = BTreeMap::new();
        for f in files {
            let (version, usable) = match WheelName::parse(&f.filename) {
                Some(w) if w.name == name => (w.version.clone(), w.usable()),
                Some(_) => continue,
                None => match sdist_name(&f.filename) {
                    Some((n, v)) if n == name => (v, false),
                    _ => continue,
                },
            };
            if f.requires_python
                .as_deref()
                .is_some_and(|r| !self.target.requires_python_ok(r))
            {
                self.python_filtered.borrow_mut().insert(name.to_string());
                continue;
            }
            if allowed.is_some_and(|a| !f.sha256.as_ref().is_some_and(|h| a.contains(h))) {
                self.hash_filtered.borrow_mut().insert(name.to_string());
                continue;
            }
            let rel = by_version
                .entry(version.clone())
                .or_insert_with(|| Release {
                    version,
                    wheel: None,
                    sdist: None,
                    others: Vec::new(),
                    yanked: true,
                });
            // A remote file without a sha256 is never used: it could not
            // be checked before it is opened.
            if usable && f.sha256.is_some() {
                // A release is yanked when all its usable files are.
                if rel.wheel.as_ref().is_none_or(|w| w.yanked && !f.yanked) {
                    rel.wheel = Some(f);
                }
            } else if self.builder.is_some()
                && !f.filename.ends_with(".whl")
                && build::buildable(&f.filename)
                && f.sha256.is_some()
            {
                if rel.sdist.as_ref().is_none_or(|s| s.yanked && !f.yanked) {
                    rel.sdist = Some(f);
                }
            } else {
                rel.others.push(f.filename);
            }
        }
        // Wheels are preferred, as pip prefers them: the sdist of a
        // release is used only when it has no pure wheel.
        for rel in by_version.values_mut() {
            rel.yanked = match (&rel.wheel, &rel.sdist) {
                (Some(w), _) => w.yanked,
                (None, Some(s)) => s.yanked,
                (None, None) => true,
            };
        }
        let v: Rc<Vec<Release>> = Rc::new(by_version.into_values().collect());
        self.releases
            .borrow_mut()
            .insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn metadata(&self, name: &str, rel: &Release) -> Result<Rc<Metadata>> {
        let key = (name.to_string(), rel.version.clone());
        if let Some(m) = self.metadata.borrow().get(&key) {
            return Ok(m.clone());
        }
        let (wheel, builder) = match (&rel.wheel, &rel.sdist, self.builder) {
            (Some(w), ..) => (w, None),
            (None, Some(s), Some(b)) => (s, Some(b)),
            _ => unreachable!("only releases with a wheel or a buildable sdist are chosen"),
        };
        let m = match builder {
            Some(b) => b.metadata(wheel, name, &rel.version)?,
            None => match self.sources.fetch_metadata(wheel, self.policy.offline)? {
                Some(data) => parse_metadata(&data)
                    .map_err(|e| PackageError(format!("{}: {e}", wheel.filename)))?,
                None => {
                    let path = self.sources.fetch(wheel, self.policy.offline)?;
                    wheel_metadata(&path, name, &wheel.filename)?
                }
            },
        };
        if normalize(&m.name) != name
            || m.version.parse::<Version>().ok().as_ref() != Some(&rel.version)
        {
            return err(format!(
                "{}: its metadata names {} {}, not what the file name says: refused",
                wheel.filename, m.name, m.version
            ));
        }
        let m = Rc::new(m);
        self.metadata.borrow_mut().insert(key, m.clone());
        Ok(m)
    }

    /// Adds a requirement's packages and ranges to `deps`.
    fn add_requirement(
        &self,
        req: &Requirement,
        parent: &Pkg,
        parent_version: &Version,
        deps: &mut Vec<(Pkg, Ranges<Version>)>,
    ) -> Result<()> {
        let name = req.name.to_string();
        let mut range = match &req.version_or_url {
            None => Ranges::full(),
            Some(VersionOrUrl::VersionSpecifier(s)) => {
                if s.iter().any(|s| s.version().any_prerelease()) {
                    self.allow_pre.borrow_mut().insert(name.clone());
                }
                for s in s.iter() {
                    if matches!(s.operator(), Operator::Equal | Operator::ExactEqual) {
                        self.pinned
                            .borrow_mut()
                            .entry(name.clone())
                            .or_default()
                            .insert(s.version().clone());
                    }
                }
                Ranges::from(s.clone())
            }
            Some(VersionOrUrl::Url(u)) => {
                return err(format!(
                    "{name} @ {u}: requirements on a URL are not supported yet; name a version from the index"
                ))
            }
        };
        if let Some(c) = self.policy.constraints.get(&name) {
            range = range.intersection(c);
        }
        self.parents
            .borrow_mut()
            .entry(name.clone())
            .or_insert_with(|| (parent.clone(), parent_version.clone()));
        // The same name twice (under different markers) must hold both.
        let mut add = |p: Pkg, r: &Ranges<Version>| match deps.iter_mut().find(|(q, _)| *q == p) {
            Some((_, old)) => *old = old.intersection(r),
            None => deps.push((p, r.clone())),
        };
        if Pkg::Dist(name.clone()) != *parent {
            add(Pkg::Dist(name.clone()), &range);
        }
        for e in &req.extras {
            add(Pkg::Extra(name.clone(), e.to_string()), &range);
        }
        Ok(())
    }

    fn deps(&self, pkg: &Pkg, v: &Version) -> Result<Dependencies<Pkg, Ranges<Version>, String>> {
        let mut deps: Vec<(Pkg, Ranges<Version>)> = Vec::new();
        match pkg {
            Pkg::Root => {
                for r in &self.root {
                    if r.evaluate_markers(&self.target.markers, &[]) {
                        self.add_requirement(r, pkg, v, &mut deps)?;
                    }
                }
            }
            Pkg::Dist(name) | Pkg::Extra(name, _) if self.policy.provided.contains_key(name) => {
                // What our own package brings needs nothing from an index.
                if let Pkg::Extra(..) = pkg {
                    deps.push((Pkg::Dist(name.clone()), Ranges::singleton(v.clone())));
                }
            }
            Pkg::Dist(name) | Pkg::Extra(name, _) => {
                let releases = self.releases(name)?;
                let Some(rel) = releases.iter().find(|r| &r.version == v) else {
                    return Ok(Dependencies::Unavailable("is not offered".into()));
                };
                let m = self.metadata(name, rel)?;
                if let Some(rp) = &m.requires_python {
                    if !self.target.requires_python_ok(rp) {
                        return Ok(Dependencies::Unavailable(format!(
                            "requires Python {rp} (the sandbox has {})",
                            self.target.python
                        )));
                    }
                }
                let extras: Vec<ExtraName> = match pkg {
                    Pkg::Extra(_, e) => {
                        deps.push((Pkg::Dist(name.clone()), Ranges::singleton(v.clone())));
                        ExtraName::from_str(e).into_iter().collect()
                    }
                    _ => Vec::new(),
                };
                if !self.policy.no_deps {
                    for line in &m.requires_dist {
                        let r = Requirement::from_str(line).map_err(|e| {
                            PackageError(format!(
                                "{name} {v} has a requirement that is not valid PEP 508 ('{line}'): {e}"
                            ))
                        })?;
                        if r.evaluate_markers(&self.target.markers, &extras) {
                            self.add_requirement(&r, pkg, v, &mut deps)?;
                        }
                    }
                }
            }
        }
        Ok(Dependencies::Available(DependencyConstraints::from_iter(
            deps,
        )))
    }

    /// The newest acceptable release of `name` in `range`: with a usable
    /// wheel, not yanked unless pinned with `==`, a final release unless
    /// pre-releases are allowed (by `--pre`, by a requirement that names
    /// one, or because the range holds nothing else, as pip does); an
    /// installed version is kept when it fits.
    fn choose(&self, name: &str, range: &Ranges<Version>) -> Result<Option<Version>> {
        if let Some((v, owner)) = self.policy.provided.get(name) {
            if range.contains(v) {
                return Ok(Some(v.clone()));
            }
            self.mark_unusable(
                name,
                format!("is part of pynbox's package {owner} (version {v}), outside the range asked for"),
            );
            return Ok(None);
        }
        let releases = self.releases(name)?;
        let pinned = self.pinned.borrow();
        let pins = pinned.get(name);
        let fits: Vec<&Release> = releases
            .iter()
            .filter(|r| range.contains(&r.version) && (r.wheel.is_some() || r.sdist.is_some()))
            .filter(|r| !r.yanked || pins.is_some_and(|p| p.contains(&r.version)))
            .collect();
        if let Some(pref) = self.policy.preferences.get(name) {
            if fits.iter().any(|r| &r.version == pref) {
                return Ok(Some(pref.clone()));
            }
        }
        let pre_ok = self.policy.pre || self.allow_pre.borrow().contains(name);
        let finals: Vec<&&Release> = fits
            .iter()
            .filter(|r| !r.version.any_prerelease())
            .collect();
        let pick = if pre_ok || finals.is_empty() {
            fits.last().copied()
        } else {
            finals.last().map(|r| **r)
        };
        if pick.is_none() {
            let in_range: Vec<&Release> = releases
                .iter()
                .filter(|r| range.contains(&r.version))
                .collect();
            let why = if releases.is_empty() && self.hash_filtered.borrow().contains(name) {
                Some("offers no file with a sha256 that --hash allows".to_string())
            } else if releases.is_empty() && self.python_filtered.borrow().contains(name) {
                Some(format!(
                    "has no release whose Requires-Python admits the sandbox's Python {}",
                    self.target.python
                ))
            } else if releases.is_empty() {
                let mut places: Vec<String> = self.sources.indexes.clone();
                places.extend(
                    self.sources
                        .find_links
                        .iter()
                        .map(|d| d.display().to_string()),
                );
                Some(format!(
                    "is not offered by {}",
                    if places.is_empty() {
                        "any index (--no-index)".to_string()
                    } else {
                        places.join(", ")
                    }
                ))
            } else if !in_range.is_empty()
                && in_range
                    .iter()
                    .all(|r| r.wheel.is_none() && r.sdist.is_none())
            {
                // What the newest release in the range offers instead:
                // its sdist by name, its platform wheels counted.
                let newest = in_range.last().expect("in_range is not empty");
                let sdists: Vec<&str> = newest
                    .others
                    .iter()
                    .filter(|f| !f.ends_with(".whl"))
                    .map(String::as_str)
                    .collect();
                let wheels = newest.others.len() - sdists.len();
                let mut offered = sdists.join(", ");
                if wheels > 0 {
                    if !offered.is_empty() {
                        offered.push_str(" and ");
                    }
                    offered.push_str(&format!(
                        "{wheels} wheel{} for other platforms",
                        if wheels == 1 { "" } else { "s" }
                    ));
                }
                Some(format!(
                    "has no pure-Python wheel (py3-none-any){} in the range asked for: {name} {} offers only {offered}",
                    if self.builder.is_some() {
                        " or source distribution pynbox can build (.tar.gz, .zip)"
                    } else {
                        " (build requirements are installed from wheels only)"
                    },
                    newest.version
                ))
            } else {
                None
            };
            if let Some(why) = why {
                self.mark_unusable(name, why);
            }
        }
        Ok(pick.map(|r| r.version.clone()))
    }

    fn mark_unusable(&self, name: &str, why: String) {
        let mut u = self.unusable.borrow_mut();
        if !u.iter().any(|(n, _)| n == name) {
            u.push((name.to_string(), why));
        }
    }

    /// "your request -> a 1.0 -> b 2.0 -> NAME".
    fn chain(&self, name: &str) -> String {
        let parents = self.parents.borrow();
        let mut chain = vec![name.to_string()];
        let mut cur = name.to_string();
        while let Some((p, v)) = parents.get(&cur) {
            match p {
                Pkg::Root => {
                    chain.push(p.to_string());
                    break;
                }
                Pkg::Dist(n) | Pkg::Extra(n, _) => {
                    chain.push(format!("{p} {v}"));
                    if chain.len() > 50 || *n == cur {
                        break;
                    }
                    cur = n.clone();
                }
            }
        }
        chain.reverse();
        chain.join(" -> ")
    }

    /// Resolves, returning the distributions to install.
    pub fn resolve(&self) -> Result<Vec<Chosen>> {
        let solution = match pubgrub::resolve(self, Pkg::Root, Version::new([0])) {
            Ok(s) => s,
            Err(PubGrubError::NoSolution(mut tree)) => {
                let involved = tree.packages();
                let unusable = self.unusable.borrow();
                for (name, why) in unusable.iter() {
                    if involved.contains(&Pkg::Dist(name.clone()))
                        || involved
                            .iter()
                            .any(|p| matches!(p, Pkg::Extra(n, _) if n == name))
                    {
                        return err(format!(
                            "cannot install {name}: it {why} (required by {})",
                            self.chain(name)
                        ));
                    }
                }
                tree.collapse_no_versions();
                let report = DefaultStringReporter::report(&tree);
                return err(format!(
                    "no set of versions satisfies the requirements:\n{}",
                    report
                        .replace("your request ==0", "your request")
                        .replace("your request 0", "your request")
                ));
            }
            Err(PubGrubError::ErrorRetrievingDependencies { source, .. })
            | Err(PubGrubError::ErrorChoosingVersion { source, .. }) => return Err(source),
            Err(PubGrubError::ErrorInShouldCancel(e)) => return Err(e),
        };
        let mut extras: HashMap<String, Vec<ExtraName>> = HashMap::new();
        for (p, _) in solution.iter() {
            if let Pkg::Extra(n, e) = p {
                extras
                    .entry(n.clone())
                    .or_default()
                    .extend(ExtraName::from_str(e).ok());
            }
        }
        let mut out = Vec::new();
        for (p, v) in solution.iter() {
            let Pkg::Dist(name) = p else { continue };
            if self.policy.provided.contains_key(name) {
                continue;
            }
            let releases = self.releases(name)?;
            let rel = releases
                .iter()
                .find(|r| &r.version == v)
                .expect("the solution's release was offered");
            let mut depends = Vec::new();
            if !self.policy.no_deps {
                let m = self.metadata(name, rel)?;
                let ex = extras.get(name).cloned().unwrap_or_default();
                for line in &m.requires_dist {
                    if let Ok(r) = Requirement::<pep508_rs::VerbatimUrl>::from_str(line) {
                        let n = r.name.to_string();
                        if n != *name
                            && r.evaluate_markers(&self.target.markers, &ex)
                            && solution.get(&Pkg::Dist(n.clone())).is_some()
                            && !depends.contains(&n)
                        {
                            depends.push(n);
                        }
                    }
                }
            }
            depends.sort();
            out.push(Chosen {
                name: name.clone(),
                version: v.clone(),
                wheel: rel
                    .wheel
                    .clone()
                    .or_else(|| rel.sdist.clone())
                    .expect("chosen releases have a wheel or an sdist"),
                depends,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl DependencyProvider for Resolver<'_> {
    type P = Pkg;
    type V = Version;
    type VS = Ranges<Version>;
    type M = String;
    type Err = PackageError;
    type Priority = (u32, Reverse<u8>);

    fn prioritize(
        &self,
        package: &Pkg,
        _range: &Ranges<Version>,
        stats: &PackageResolutionStatistics,
    ) -> Self::Priority {
        // Packages that conflicted before are decided first; then extras
        // before their base, so a base is chosen with its extras known.
        let kind = match package {
            Pkg::Root => 0,
            Pkg::Extra(..) => 1,
            Pkg::Dist(_) => 2,
        };
        (stats.conflict_count(), Reverse(kind))
    }

    fn choose_version(&self, package: &Pkg, range: &Ranges<Version>) -> Result<Option<Version>> {
        match package {
            Pkg::Root => Ok(Some(Version::new([0]))),
            Pkg::Dist(n) | Pkg::Extra(n, _) => self.choose(n, range),
        }
    }

    fn get_dependencies(
        &self,
        package: &Pkg,
        version: &Version,
    ) -> Result<Dependencies<Pkg, Ranges<Version>, String>> {
        self.deps(package, version)
    }
}
