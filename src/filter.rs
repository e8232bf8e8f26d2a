//! Include / exclude filters of a job.
//!
//! Paths handed to a [`Filter`] are relative to the job root, `/`-separated, without a leading
//! `/`. Patterns are globs (gitignore-like rules, see below) or, with a `re:` prefix, regular
//! expressions searched anywhere in the whole relative path.
//!
//! Glob rules:
//! - a pattern without `/` matches the base name at any depth (`*.pdf` matches `a/b/c.pdf`);
//! - a pattern with a `/` (other than a trailing one) is anchored at the root and matches the whole
//!   relative path; a leading `/` is allowed and stripped;
//! - a trailing `/` restricts the pattern to directories;
//! - `*`, `?` and `[...]` stay within one path segment, `**` crosses segments: `dir/**` matches
//!   what is inside `dir` (not `dir` itself), `**/x` matches `x` at any depth including the root
//!   level, `a/**/b` matches `a/b`, `a/x/b`, `a/x/y/b`.
//!
//! A path is also matched by a pattern when one of its ancestor directories is: excluding `build`
//! hides `build/x/y.o`, including `invoices` brings in everything below `invoices`.
//!
//! Matching is case-sensitive and byte-exact.
//!
//! Implementation notes:
//! - globs of the common forms (`[**/]seg[/seg…][/**]`, each segment literal text and `*`, e.g.
//!   `*.tmp`, `draft*`, `*x*`, `build`, `docs/*.md`, `invoices/**`, `**/.git`) are matched segment
//!   by segment with plain byte comparisons: no regex engine, no allocation;
//! - the other globs of a list are compiled into a single [`GlobSet`]. "Some ancestor directory
//!   of `p` matches glob `G`" is exactly "`p` matches `G/**`" (with `*` not crossing `/`, the part
//!   before the `/` that `G/**` requires is a prefix of `p` ending at a segment boundary, i.e. an
//!   ancestor directory), so the set also holds that form of every glob and one lookup per path
//!   covers the ancestors;
//! - `re:` patterns form one [`RegexSet`]; only those with an end-of-text assertion need to be
//!   tried on the ancestors' paths as well.

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use regex::{Regex, RegexSet};

/// A pattern in `include` or `exclude` that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid {key} pattern {pattern:?}: {reason}")]
pub struct FilterError {
    /// `"include"` or `"exclude"`.
    pub key: &'static str,
    /// The pattern as written in the configuration.
    pub pattern: String,
    /// Why it does not compile.
    pub reason: String,
}

/// The compiled `include` and `exclude` lists of a job.
#[derive(Debug, Clone)]
pub struct Filter {
    include: PatternList,
    exclude: PatternList,
}

/// Name of the reserved folder at the root of every job.
const RESERVED_DIR: &str = ".omnisync";
/// Suffix of in-flight transfer files.
const PARTIAL_SUFFIX: &str = ".omnisync-partial";

impl Filter {
    /// Compiles the two pattern lists. An empty `include` list means "everything".
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, FilterError> {
        Self::build(include, exclude, true)
    }

    /// `fast`: see [`PatternList::build`].
    fn build(include: &[String], exclude: &[String], fast: bool) -> Result<Filter, FilterError> {
        Ok(Filter {
            include: PatternList::build("include", include, fast)?,
            exclude: PatternList::build("exclude", exclude, fast)?,
        })
    }

    /// Is this file visible to the job? Exclude wins over include; an empty include list
    /// includes everything. A file below an excluded directory is excluded; a file below an
    /// included directory is included.
    ///
    /// Paths are relative to the job root, `/`-separated, no leading `/`.
    pub fn includes_file(&self, path: &str) -> bool {
        if !self.exclude.is_active() && !self.include.is_active() {
            return true;
        }
        if self.exclude.matches(path, Kind::File) {
            return false;
        }
        !self.include.is_active() || self.include.matches(path, Kind::File)
    }

    /// Should the walk prune this directory (with all of its contents)? True only when the
    /// directory, or one of its ancestors, matches an exclude pattern. Include patterns never
    /// prune directories. The root (`""`) is never excluded.
    pub fn excludes_dir(&self, path: &str) -> bool {
        !path.is_empty() && self.exclude.is_active() && self.exclude.matches(path, Kind::Dir)
    }

    /// With a non-empty include list: does the directory itself (or one of its ancestors) match
    /// an include pattern? A pattern `dir/**` counts as matching `dir`, so that an empty
    /// `invoices` folder is kept for `invoices/**` as well as for `invoices`. Always false when
    /// the include list is empty.
    pub fn includes_dir(&self, path: &str) -> bool {
        !path.is_empty() && self.include.is_active() && self.include.matches(path, Kind::IncludeDir)
    }

    /// Is the include list non-empty?
    pub fn has_includes(&self) -> bool {
        self.include.is_active()
    }

    /// Does this filter let everything through (no include and no exclude patterns)?
    pub fn is_empty(&self) -> bool {
        !self.include.is_active() && !self.exclude.is_active()
    }

    /// Reserved names that are never synced, whatever the filters say: the root's `.omnisync`
    /// folder (exactly the top-level `.omnisync` and everything under it) and any file whose name
    /// ends with `.omnisync-partial`.
    pub fn is_reserved(path: &str) -> bool {
        if path.ends_with(PARTIAL_SUFFIX) {
            return true;
        }
        match path.strip_prefix(RESERVED_DIR) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// What kind of entry a path is being matched as.
#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
    /// A directory in [`Filter::includes_dir`]: `dir/**` also matches `dir`.
    IncludeDir,
}

/// One compiled list (`include` or `exclude`).
#[derive(Clone)]
struct PatternList {
    /// The patterns as configured (for `Debug`).
    patterns: Vec<String>,
    /// The simple globs (see [`SimpleGlob`]), matched segment by segment without globset.
    simple: SimpleSet,
    /// The other globs that apply to files: those without a trailing `/`, plus the ancestor
    /// form (`G/**`) of every glob.
    file_globs: GlobSet,
    /// The other globs as they apply to directories: every glob, plus its ancestor form.
    dir_globs: GlobSet,
    /// `dir_globs` plus `P` for every glob `P/**`.
    include_dir_globs: GlobSet,
    /// `re:` patterns, searched in the path and in each ancestor directory's path.
    regexes: RegexSet,
    /// The `re:` patterns that may hold an end-of-text assertion (`$`, `\z`). Only these need
    /// to be searched in the ancestors' paths: a match of any other regex in an ancestor's path
    /// (a prefix of the path followed by `/`) is also a match in the path itself.
    end_anchored: RegexSet,
}

impl std::fmt::Debug for PatternList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The compiled matchers are large and say nothing useful; show the patterns.
        self.patterns.fmt(f)
    }
}

impl PatternList {
    /// `fast`: match the simple globs without globset (always, except in tests that compare
    /// both ways).
    fn build(
        key: &'static str,
        patterns: &[String],
        fast: bool,
    ) -> Result<PatternList, FilterError> {
        let mut simple = SimpleSet::default();
        let mut file_globs = GlobSetBuilder::new();
        let mut dir_globs = GlobSetBuilder::new();
        let mut include_dir_globs = GlobSetBuilder::new();
        let mut regexes = Vec::new();
        let mut end_anchored = Vec::new();

        for pattern in patterns {
            let err = |reason: String| FilterError {
                key,
                pattern: pattern.clone(),
                reason,
            };
            if let Some(re) = pattern.strip_prefix("re:") {
                if re.is_empty() {
                    return Err(err("empty regular expression".into()));
                }
                Regex::new(re).map_err(|e| err(e.to_string()))?;
                regexes.push(re);
                if re.contains('$') || re.contains("\\z") {
                    end_anchored.push(re);
                }
                continue;
            }

            let (body, anchored, dir_only) =
                split_glob(pattern).ok_or_else(|| err("empty glob".into()))?;
            let glob = if anchored {
                body.to_owned()
            } else {
                // A pattern without `/` matches the base name at any depth.
                format!("**/{body}")
            };
            // Validate the glob as written first, so errors name the user's pattern.
            let own = compile_glob(&glob).map_err(&err)?;
            if fast {
                if let Some(s) = SimpleGlob::new(body, anchored, dir_only) {
                    simple.add(s);
                    continue;
                }
            }
            // Ancestor form: `G/**` matches every path below a directory matching `G`. A glob
            // that ends in `**` covers its descendants itself, unless it is for directories only
            // (it must then not match the files right below such a directory); its ancestor form
            // is `…*/**`, not `…**/**`, as `**/` may match no folder at all.
            let ends_in_any = glob == "**" || glob.ends_with("/**");
            let descendants = match (ends_in_any, dir_only) {
                (true, false) => None,
                (true, true) => Some(format!("{}*/**", &glob[..glob.len() - 2])),
                (false, _) => Some(format!("{glob}/**")),
            };
            let descendants = descendants
                .map(|d| compile_glob(&d))
                .transpose()
                .map_err(&err)?;
            if !dir_only {
                file_globs.add(own.clone());
            }
            dir_globs.add(own.clone());
            include_dir_globs.add(own);
            if let Some(d) = descendants {
                file_globs.add(d.clone());
                dir_globs.add(d.clone());
                include_dir_globs.add(d);
            }
            if let Some(parent) = glob.strip_suffix("/**") {
                include_dir_globs.add(compile_glob(parent).map_err(&err)?);
            }
        }

        let whole_list_error = |reason: String| FilterError {
            key,
            pattern: patterns.join(", "),
            reason,
        };
        let build_globs =
            |b: GlobSetBuilder| b.build().map_err(|e| whole_list_error(e.to_string()));
        let build_regexes =
            |res: &[&str]| RegexSet::new(res).map_err(|e| whole_list_error(e.to_string()));
        Ok(PatternList {
            patterns: patterns.to_vec(),
            simple,
            file_globs: build_globs(file_globs)?,
            dir_globs: build_globs(dir_globs)?,
            include_dir_globs: build_globs(include_dir_globs)?,
            regexes: build_regexes(&regexes)?,
            end_anchored: build_regexes(&end_anchored)?,
        })
    }

    fn is_active(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Does `path`, taken as `kind`, or one of its ancestor directories match the list?
    fn matches(&self, path: &str, kind: Kind) -> bool {
        if self.simple.matches(path, kind) {
            return true;
        }
        let globs = match kind {
            Kind::File => &self.file_globs,
            Kind::Dir => &self.dir_globs,
            Kind::IncludeDir => &self.include_dir_globs,
        };
        if !globs.is_empty() && globs.is_match_candidate(&Candidate::from_bytes(path.as_bytes())) {
            return true;
        }
        if self.regexes.is_empty() {
            return false;
        }
        if self.regexes.is_match(path) {
            return true;
        }
        // Ancestor directories, e.g. `a` and `a/b` for `a/b/c`.
        !self.end_anchored.is_empty()
            && path
                .match_indices('/')
                .any(|(i, _)| i > 0 && self.end_anchored.is_match(&path[..i]))
    }
}

/// A glob of the form `[**/]seg[/seg…][/**]` whose segments are literal text and `*` (the common
/// `*.tmp`, `draft*`, `*x*`, `build`, `docs/*.md`, `invoices/**` forms), matched segment by
/// segment without globset. Gives the same results as the globset form (a test checks this).
#[derive(Debug, Clone)]
struct SimpleGlob {
    /// One matcher per segment, from the root when anchored; exactly one when not anchored.
    segments: Vec<Wildcard>,
    /// Anchored at the root (else: matches a segment at any depth).
    anchored: bool,
    /// Trailing `/`: the glob itself matches directories only.
    dir_only: bool,
    /// Ends in `/**`: matches what is below the segments (the directory itself only for
    /// [`Kind::IncludeDir`]).
    below: bool,
}

impl SimpleGlob {
    /// `body`, `anchored`, `dir_only`: see [`split_glob`]. `None` when the glob needs globset.
    fn new(body: &str, anchored: bool, dir_only: bool) -> Option<SimpleGlob> {
        let (body, anchored) = match body.strip_prefix("**/") {
            Some(rest) => (rest, false),
            None => (body, anchored),
        };
        let (body, below) = match body.strip_suffix("/**") {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        let special = |c: char| matches!(c, '?' | '[' | ']' | '{' | '}' | '\\');
        if body.contains(special) || body.contains("**") {
            return None;
        }
        let segments: Vec<&str> = body.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) || (!anchored && segments.len() != 1) {
            return None;
        }
        Some(SimpleGlob {
            segments: segments.into_iter().map(Wildcard::new).collect(),
            anchored,
            dir_only,
            below,
        })
    }

    /// The glob matches `path` (`n` segments, taken as `kind`) or one of its ancestors exactly
    /// when it matches the leading `i` segments of `path` for some `i <= limit`.
    fn limit(&self, n: usize, kind: Kind) -> usize {
        let below = usize::from(self.below && !matches!(kind, Kind::IncludeDir));
        let not_self = usize::from(self.dir_only && matches!(kind, Kind::File));
        n.saturating_sub(below + not_self)
    }
}

/// The simple globs of a list.
#[derive(Debug, Clone, Default)]
struct SimpleSet {
    /// Those anchored at the root.
    anchored: Vec<SimpleGlob>,
    /// Those that match a segment at any depth.
    floating: Vec<SimpleGlob>,
}

impl SimpleSet {
    fn add(&mut self, glob: SimpleGlob) {
        if glob.anchored {
            self.anchored.push(glob);
        } else {
            self.floating.push(glob);
        }
    }

    /// Does one of the globs match `path` (taken as `kind`) or one of its ancestor directories?
    fn matches(&self, path: &str, kind: Kind) -> bool {
        if self.anchored.is_empty() && self.floating.is_empty() {
            return false;
        }
        let path = path.as_bytes();
        let n = path.iter().filter(|&&b| b == b'/').count() + 1;
        let anchored = self.anchored.iter().any(|glob| {
            glob.segments.len() <= glob.limit(n, kind)
                && segments(path)
                    .zip(&glob.segments)
                    .all(|(segment, w)| w.matches(segment))
        });
        // One pass over the segments for all the floating globs.
        anchored
            || (!self.floating.is_empty()
                && segments(path).enumerate().any(|(i, segment)| {
                    self.floating
                        .iter()
                        .any(|glob| i < glob.limit(n, kind) && glob.segments[0].matches(segment))
                }))
    }
}

/// The `/`-separated segments of a path (`n` slashes make `n + 1` segments).
fn segments(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
}

/// One glob segment made of literal text and `*`.
#[derive(Debug, Clone)]
enum Wildcard {
    /// `*`
    Any,
    /// `abc`
    Literal(Box<[u8]>),
    /// `abc*`
    Prefix(Box<[u8]>),
    /// `*abc`
    Suffix(Box<[u8]>),
    /// `*abc*`
    Contains(Box<[u8]>),
    /// `ab*cd`
    PrefixSuffix(Box<[u8]>, Box<[u8]>),
    /// Anything else: the literal parts between the `*`s (at least three).
    General(Vec<Box<[u8]>>),
}

impl Wildcard {
    fn new(segment: &str) -> Wildcard {
        let parts: Vec<Box<[u8]>> = segment.split('*').map(|p| p.as_bytes().into()).collect();
        match parts.as_slice() {
            [lit] => Wildcard::Literal(lit.clone()),
            [a, b] if a.is_empty() && b.is_empty() => Wildcard::Any,
            [a, b] if a.is_empty() => Wildcard::Suffix(b.clone()),
            [a, b] if b.is_empty() => Wildcard::Prefix(a.clone()),
            [a, b] => Wildcard::PrefixSuffix(a.clone(), b.clone()),
            [a, c, b] if a.is_empty() && b.is_empty() => Wildcard::Contains(c.clone()),
            _ => Wildcard::General(parts),
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        match self {
            Wildcard::Any => true,
            Wildcard::Literal(lit) => s.len() == lit.len() && starts_with(s, lit),
            Wildcard::Prefix(p) => starts_with(s, p),
            Wildcard::Suffix(x) => ends_with(s, x),
            Wildcard::Contains(c) => find(s, c).is_some(),
            Wildcard::PrefixSuffix(p, x) => {
                s.len() >= p.len() + x.len() && starts_with(s, p) && ends_with(s, x)
            }
            Wildcard::General(parts) => {
                let (first, last) = (&parts[0], &parts[parts.len() - 1]);
                if s.len() < first.len() + last.len()
                    || !starts_with(s, first)
                    || !ends_with(s, last)
                {
                    return false;
                }
                // `*` matches anything, so taking each middle part at its first occurrence is
                // enough.
                let mut rest = &s[first.len()..s.len() - last.len()];
                for middle in &parts[1..parts.len() - 1] {
                    match find(rest, middle) {
                        Some(i) => rest = &rest[i + middle.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }
}

/// `s.starts_with(p)`, checking the first byte before calling `memcmp` (segments are short and
/// most comparisons fail there).
fn starts_with(s: &[u8], p: &[u8]) -> bool {
    match (s.first(), p.first()) {
        (_, None) => true,
        (Some(a), Some(b)) => a == b && s.starts_with(p),
        (None, Some(_)) => false,
    }
}

/// `s.ends_with(x)`, checking the last byte before calling `memcmp`.
fn ends_with(s: &[u8], x: &[u8]) -> bool {
    match (s.last(), x.last()) {
        (_, None) => true,
        (Some(a), Some(b)) => a == b && s.ends_with(x),
        (None, Some(_)) => false,
    }
}

/// First occurrence of `needle` (not empty) in `haystack` (a short path segment).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w[0] == needle[0] && w == needle)
}

/// Splits a configured glob into its body (no leading or trailing `/`), whether it is anchored
/// at the root (it holds a `/` other than a trailing one) and whether it is for directories only
/// (trailing `/`). `None` when nothing is left of it.
fn split_glob(pattern: &str) -> Option<(&str, bool, bool)> {
    let trimmed = pattern.trim_end_matches('/');
    let dir_only = trimmed.len() != pattern.len();
    let anchored = trimmed.contains('/');
    let body = trimmed.trim_start_matches('/');
    (!body.is_empty()).then_some((body, anchored, dir_only))
}

fn compile_glob(glob: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(false)
        .build()
        .map_err(|e| e.kind().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, expected) rows.
    type Cases<'a> = &'a [(&'a str, bool)];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(&strings(include), &strings(exclude)).expect("valid patterns")
    }

    /// Checks `includes_file` for a single include pattern (and no excludes), with and without
    /// the simple-glob matcher.
    fn check_include(pattern: &str, cases: Cases) {
        for fast in [true, false] {
            let f = Filter::build(&strings(&[pattern]), &[], fast).unwrap();
            for &(path, want) in cases {
                assert_eq!(
                    f.includes_file(path),
                    want,
                    "include {pattern:?} on file {path:?}, fast {fast}"
                );
            }
        }
    }

    /// Checks `includes_file` for a single exclude pattern (and no includes), with and without
    /// the simple-glob matcher.
    fn check_exclude(pattern: &str, cases: Cases) {
        for fast in [true, false] {
            let f = Filter::build(&[], &strings(&[pattern]), fast).unwrap();
            for &(path, excluded) in cases {
                assert_eq!(
                    f.includes_file(path),
                    !excluded,
                    "exclude {pattern:?} on file {path:?}, fast {fast}"
                );
            }
        }
    }

    #[test]
    fn empty_lists_include_everything() {
        let f = filter(&[], &[]);
        assert!(!f.has_includes());
        for p in ["a", "a.pdf", "a/b/c.txt", ".hidden", "x/.y/z"] {
            assert!(f.includes_file(p), "{p}");
            assert!(!f.excludes_dir(p), "{p}");
            assert!(!f.includes_dir(p), "{p}");
        }
    }

    #[test]
    fn base_name_patterns_match_at_any_depth() {
        let table: &[(&str, Cases)] = &[
            (
                "*.pdf",
                &[
                    ("c.pdf", true),
                    ("a/c.pdf", true),
                    ("a/b/c.pdf", true),
                    (".pdf", true),
                    ("c.pdfx", false),
                    ("c.PDF", false),
                    ("a/c.pdf/x.txt", true), // below a directory named c.pdf
                    ("c_pdf", false),
                ],
            ),
            (
                "report.txt",
                &[
                    ("report.txt", true),
                    ("x/report.txt", true),
                    ("x/y/report.txt", true),
                    ("xreport.txt", false),
                    ("x/report.txt.bak", false),
                ],
            ),
            (
                "?.md",
                &[
                    ("a.md", true),
                    ("d/b.md", true),
                    ("ab.md", false),
                    (".md", false),
                ],
            ),
            (
                "[ab]*.log",
                &[("a1.log", true), ("x/b.log", true), ("c.log", false)],
            ),
            (
                "*.{jpg,png}",
                &[("a.jpg", true), ("p/a.png", true), ("a.gif", false)],
            ),
        ];
        for (pattern, cases) in table {
            check_include(pattern, cases);
        }
    }

    #[test]
    fn seeds_starts_contains_ends_with() {
        // "starts with x" / "contains x" / "ends with x" from the seeds are x*, *x*, *x.
        let table: &[(&str, Cases)] = &[
            (
                "draft*",
                &[
                    ("draft", true),
                    ("draft-1.docx", true),
                    ("a/b/draft.txt", true),
                    ("mydraft.txt", false),
                    ("a/mydraft", false),
                ],
            ),
            (
                "*draft*",
                &[
                    ("draft", true),
                    ("mydraft.txt", true),
                    ("a/b/the-draft-2", true),
                    ("a/dra-ft", false),
                    ("notes.txt", false),
                ],
            ),
            (
                "*.bak",
                &[
                    ("x.bak", true),
                    ("a/b/x.bak", true),
                    ("x.bak.txt", false),
                    ("bak", false),
                ],
            ),
            (
                "~$*",
                &[
                    ("~$doc.docx", true),
                    ("a/~$doc.docx", true),
                    ("doc~$.docx", false),
                ],
            ),
        ];
        for (pattern, cases) in table {
            check_include(pattern, cases);
            check_exclude(pattern, cases);
        }
    }

    #[test]
    fn star_stays_within_one_segment() {
        check_include(
            "docs/*.md",
            &[
                ("docs/a.md", true),
                ("docs/x/a.md", false),
                ("a.md", false),
                ("x/docs/a.md", false),
            ],
        );
        check_include(
            "a/?/c",
            &[("a/b/c", true), ("a//c", false), ("a/bb/c", false)],
        );
        // `**` that is not a whole path component is an ordinary `*` (gitignore rules).
        check_include(
            "a/**b",
            &[
                ("a/b", true),
                ("a/xb", true),
                ("a/x/yb", false),
                ("a/x/b", false),
            ],
        );
    }

    #[test]
    fn patterns_with_slash_are_anchored() {
        let table: &[(&str, Cases)] = &[
            (
                "docs/readme.md",
                &[
                    ("docs/readme.md", true),
                    ("x/docs/readme.md", false),
                    ("readme.md", false),
                    ("docs/readme.md/inner", true), // below a matching directory
                ],
            ),
            ("/top.txt", &[("top.txt", true), ("a/top.txt", false)]),
            (
                "/build",
                &[
                    ("build", true),
                    ("build/x.o", true),
                    ("src/build", false),
                    ("src/build/x.o", false),
                ],
            ),
        ];
        for (pattern, cases) in table {
            check_include(pattern, cases);
            check_exclude(pattern, cases);
        }
    }

    #[test]
    fn double_star_forms() {
        let table: &[(&str, Cases)] = &[
            (
                "invoices/**",
                &[
                    ("invoices", false), // not the directory itself
                    ("invoices/a.pdf", true),
                    ("invoices/2024/a.pdf", true),
                    ("x/invoices/a.pdf", false),
                    ("invoicesx/a.pdf", false),
                ],
            ),
            (
                "**/x",
                &[
                    ("x", true),
                    ("a/x", true),
                    ("a/b/x", true),
                    ("a/b/x/inner", true),
                    ("a/xx", false),
                ],
            ),
            (
                "**/*.tmp",
                &[("a.tmp", true), ("d/e/a.tmp", true), ("a.tmpx", false)],
            ),
            (
                "a/**/b",
                &[
                    ("a/b", true),
                    ("a/x/b", true),
                    ("a/x/y/b", true),
                    ("a/x/y/b/c", true),
                    ("a/xb", false),
                    ("x/a/b", false),
                    ("a/x/bb", false),
                ],
            ),
            ("**", &[("a", true), ("a/b/c", true)]),
            (
                "src/**/*.rs",
                &[
                    ("src/main.rs", true),
                    ("src/a/b/lib.rs", true),
                    ("main.rs", false),
                    ("src/main.rs.orig", false),
                ],
            ),
        ];
        for (pattern, cases) in table {
            check_include(pattern, cases);
            check_exclude(pattern, cases);
        }
    }

    #[test]
    fn regex_patterns_search_the_whole_path() {
        let table: &[(&str, Cases)] = &[
            (
                r"re:^draft-.*\.docx$",
                &[
                    ("draft-1.docx", true),
                    ("draft-.docx", true),
                    ("a/draft-1.docx", false), // anchored at the start of the whole path
                    ("draft-1.docx.bak", false),
                    ("xdraft-1.docx", false),
                ],
            ),
            (
                r"re:\.te?mp$",
                &[
                    ("a.tmp", true),
                    ("a/b/c.temp", true),
                    ("a.tmp/inner.txt", true), // below a matching directory
                    ("a.tmpl", false),
                ],
            ),
            (
                "re:cache",
                &[
                    ("cache", true),
                    ("x/mycache.db", true),
                    ("a/cache/b", true),
                    ("a/CACHE/b", false),
                ],
            ),
            (
                "re:/old/",
                &[("a/old/b", true), ("old/b", false), ("a/old", false)],
            ),
            (
                // End-of-text assertions are checked against each ancestor directory too.
                r"re:(^|/)old\z",
                &[
                    ("old", true),
                    ("a/old", true),
                    ("a/old/b", true),
                    ("a/old/b/c", true),
                    ("a/older/b", false),
                    ("a/bold/b", false),
                ],
            ),
            (
                r"re:\btmp\b",
                &[
                    ("tmp", true),
                    ("x/tmp/y", true),
                    ("x/tmp", true),
                    ("x/tmpy/z", false),
                    ("x/a_tmp/z", false),
                ],
            ),
        ];
        for (pattern, cases) in table {
            check_include(pattern, cases);
            check_exclude(pattern, cases);
        }
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filter(&["*.pdf", "invoices/**"], &["secret*", "invoices/tmp"]);
        assert!(f.has_includes());
        let cases = [
            ("a.pdf", true),
            ("x/y/a.pdf", true),
            ("secret.pdf", false),
            ("x/secret.pdf", false),
            ("invoices/a.txt", true),
            ("invoices/tmp", false),
            ("invoices/tmp/a.pdf", false),
            ("invoices/secret-plan.txt", false),
            ("notes.txt", false),
            ("x/notes.txt", false),
        ];
        for (path, want) in cases {
            assert_eq!(f.includes_file(path), want, "{path}");
        }
    }

    #[test]
    fn include_list_limits_files_but_never_prunes_dirs() {
        let f = filter(&["*.pdf"], &[]);
        assert!(f.includes_file("a/b.pdf"));
        assert!(!f.includes_file("a/b.txt"));
        for d in ["a", "a/b", "docs"] {
            assert!(!f.excludes_dir(d), "{d}");
        }
    }

    #[test]
    fn ancestor_directory_exclusion() {
        let f = filter(
            &[],
            &[
                "build",
                "/target",
                "logs/",
                "re:^cache$",
                "a/**/node_modules",
            ],
        );
        let files = [
            ("build", false),
            ("build/x/y.o", false),
            ("src/build/x.o", false),
            ("buildx/y.o", true),
            ("target/debug/app", false),
            ("src/target/x", true),
            ("logs", true), // a file named logs: `logs/` is for directories only
            ("logs/today.log", false),
            ("x/logs/today.log", false),
            ("cache/a", false),
            ("x/cache/a", true),
            ("cachex/a", true),
            ("a/node_modules/p/index.js", false),
            ("a/b/node_modules/p/index.js", false),
            ("b/node_modules/p/index.js", true),
            ("src/main.rs", true),
        ];
        for (path, want) in files {
            assert_eq!(f.includes_file(path), want, "file {path}");
        }
        let dirs = [
            ("build", true),
            ("build/x", true),
            ("src/build", true),
            ("src", false),
            ("target", true),
            ("target/debug", true),
            ("src/target", false),
            ("logs", true),
            ("x/logs", true),
            ("x/logs/old", true),
            ("cache", true),
            ("cache/sub", true),
            ("x/cache", false),
            ("a/node_modules", true),
            ("a/x/node_modules/p", true),
            ("node_modules", false),
            ("", false),
        ];
        for (path, want) in dirs {
            assert_eq!(f.excludes_dir(path), want, "dir {path}");
        }
    }

    #[test]
    fn excludes_dir_with_double_star() {
        // `dir/**` hides what is inside dir, not dir itself.
        let f = filter(&[], &["build/**", "**/.git"]);
        assert!(!f.excludes_dir("build"));
        assert!(f.excludes_dir("build/x"));
        assert!(f.excludes_dir("build/x/y"));
        assert!(!f.includes_file("build/a.o"));
        assert!(f.excludes_dir(".git"));
        assert!(f.excludes_dir("a/b/.git"));
        assert!(f.excludes_dir("a/b/.git/objects"));
        assert!(!f.includes_file("a/.git/HEAD"));
        assert!(f.includes_file("a/.gitignore"));
    }

    #[test]
    fn includes_dir_keeps_matching_dirs() {
        let cases: &[(&[&str], Cases)] = &[
            (
                &["invoices/**"],
                &[
                    ("invoices", true),
                    ("invoices/2024", true),
                    ("x/invoices", false),
                    ("other", false),
                ],
            ),
            (
                &["invoices"],
                &[
                    ("invoices", true),
                    ("invoices/2024", true),
                    ("x/invoices", true),
                    ("other", false),
                ],
            ),
            (
                &["invoices/"],
                &[("invoices", true), ("a/invoices/b", true), ("other", false)],
            ),
            (&["/invoices"], &[("invoices", true), ("x/invoices", false)]),
            (&["*.pdf"], &[("docs", false), ("a/b", false)]),
            (&["re:^inv"], &[("invoices", true), ("a/invoices", false)]),
        ];
        for (include, dirs) in cases {
            let f = filter(include, &[]);
            for &(dir, want) in *dirs {
                assert_eq!(
                    f.includes_dir(dir),
                    want,
                    "include {include:?} on dir {dir:?}"
                );
            }
        }
        // No include list: includes_dir is never true.
        assert!(!filter(&[], &[]).includes_dir("invoices"));
    }

    #[test]
    fn included_dir_brings_in_its_files() {
        let f = filter(&["invoices", "/photos/"], &[]);
        assert!(f.includes_file("invoices/a.pdf"));
        assert!(f.includes_file("x/invoices/2024/a.pdf"));
        assert!(f.includes_file("photos/a.jpg"));
        assert!(!f.includes_file("photos")); // `photos/` only applies to directories
        assert!(!f.includes_file("x/photos/a.jpg"));
        assert!(!f.includes_file("other/a.pdf"));
    }

    #[test]
    fn case_sensitive_and_byte_exact() {
        let f = filter(&[], &["*.TMP", "Café"]);
        assert!(!f.includes_file("a.TMP"));
        assert!(f.includes_file("a.tmp"));
        assert!(!f.includes_file("x/Café"));
        // Decomposed é (e + U+0301) is a different name.
        assert!(f.includes_file("x/Cafe\u{301}"));
    }

    /// The definition, pattern by pattern: does the pattern match a path (taken as some kind) or
    /// one of its ancestor directories? One plain glob or regex, tried on every prefix.
    struct Reference {
        matcher: Box<dyn Fn(&str) -> bool>,
        dir_only: bool,
        /// `P` for a glob `P/**`.
        include_dir_parent: Option<globset::GlobMatcher>,
    }

    impl Reference {
        fn new(pattern: &str) -> Reference {
            if let Some(re) = pattern.strip_prefix("re:") {
                let re = Regex::new(re).unwrap();
                return Reference {
                    matcher: Box::new(move |p| re.is_match(p)),
                    dir_only: false,
                    include_dir_parent: None,
                };
            }
            let (body, anchored, dir_only) = split_glob(pattern).unwrap();
            let glob = if anchored {
                body.to_owned()
            } else {
                format!("**/{body}")
            };
            let m = compile_glob(&glob).unwrap().compile_matcher();
            Reference {
                matcher: Box::new(move |p| m.is_match(p)),
                dir_only,
                include_dir_parent: glob
                    .strip_suffix("/**")
                    .map(|parent| compile_glob(parent).unwrap().compile_matcher()),
            }
        }

        fn matches(&self, path: &str, kind: Kind) -> bool {
            let self_allowed = !(self.dir_only && matches!(kind, Kind::File));
            if self_allowed && (self.matcher)(path) {
                return true;
            }
            if let (Kind::IncludeDir, Some(m)) = (kind, &self.include_dir_parent) {
                if m.is_match(path) {
                    return true;
                }
            }
            path.match_indices('/')
                .any(|(i, _)| (self.matcher)(&path[..i]))
        }
    }

    /// The compiled lists (segment matcher for simple globs, or globset only) agree with the
    /// definition on every path.
    #[test]
    fn matchers_agree_with_definition() {
        let patterns = [
            "a",
            "*",
            "a*",
            "*a",
            "*a*",
            "a*b",
            "*.x",
            "a*.x",
            ".x",
            "a/b",
            "a/*",
            "*/b",
            "/a",
            "a/",
            "*.x/",
            "a/*/",
            "/a/b/",
            "*/*",
            "a*b*a",
            "ab*ba",
            "é",
            "*é*",
            "a/b/a",
            "**/a",
            "a/**",
            "a?",
            "[ab]",
            "**/a/**",
            "a/**/",
            "**/a/",
            "*/b/**",
            "**/*.x",
            "a*/**",
            "**/a/b",
            "a/**/b",
            "b/*a*/**/",
            "*a*b*",
            "a**",
            "**",
            "**/",
            "re:a$",
            "re:^a",
            r"re:\.x$",
            "re:b/a",
            r"re:(^|/)a\z",
            r"re:\ba\b",
            "re:é",
        ];
        let names = [
            "a", "b", "ab", "ba", "aba", "a.x", ".x", "x", "aXb", "é", "aéb",
        ];
        // Every path of one to three segments.
        let mut level: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut paths = level.clone();
        for _ in 0..2 {
            level = level
                .iter()
                .flat_map(|p| names.iter().map(move |n| format!("{p}/{n}")))
                .collect();
            paths.extend(level.iter().cloned());
        }
        assert_eq!(paths.len(), 11 + 11 * 11 + 11 * 11 * 11);
        for pattern in patterns {
            let reference = Reference::new(pattern);
            let list = strings(&[pattern]);
            for fast in [true, false] {
                let inc = Filter::build(&list, &[], fast).unwrap();
                let exc = Filter::build(&[], &list, fast).unwrap();
                for p in &paths {
                    let ctx = format!("pattern {pattern:?}, path {p:?}, fast {fast}");
                    let file = reference.matches(p, Kind::File);
                    assert_eq!(inc.includes_file(p), file, "include file, {ctx}");
                    assert_eq!(exc.includes_file(p), !file, "exclude file, {ctx}");
                    let dir = reference.matches(p, Kind::Dir);
                    assert_eq!(exc.excludes_dir(p), dir, "exclude dir, {ctx}");
                    assert!(!inc.excludes_dir(p), "include dir, {ctx}");
                    let inc_dir = reference.matches(p, Kind::IncludeDir);
                    assert_eq!(inc.includes_dir(p), inc_dir, "include dir, {ctx}");
                }
            }
        }
        // Whole lists: exclude wins, empty include means everything.
        let include = strings(&["*.x", "b", "a/b/", "re:^ab"]);
        let exclude = strings(&["a/**", "*é*/", "re:b$"]);
        let inc_refs: Vec<Reference> = include.iter().map(|i| Reference::new(i)).collect();
        let exc_refs: Vec<Reference> = exclude.iter().map(|e| Reference::new(e)).collect();
        for fast in [true, false] {
            let f = Filter::build(&include, &exclude, fast).unwrap();
            for p in &paths {
                let inc = inc_refs.iter().any(|r| r.matches(p, Kind::File));
                let exc = exc_refs.iter().any(|r| r.matches(p, Kind::File));
                assert_eq!(f.includes_file(p), inc && !exc, "{p:?}, fast {fast}");
            }
        }
    }

    #[test]
    fn reserved_names() {
        let cases = [
            (".omnisync", true),
            (".omnisync/trash/x", true),
            (".omnisync/state.db", true),
            ("a/.omnisync/x", false),
            ("a/.omnisync", false),
            (".omnisyncx", false),
            (".omnisync-partial", true),
            (".omnisyncx/y", false),
            ("a/b.txt.omnisync-partial", true),
            ("b.txt.omnisync-partial", true),
            ("b.txt.omnisync-partial.bak", false),
            ("b.txt", false),
            ("", false),
        ];
        for (path, want) in cases {
            assert_eq!(Filter::is_reserved(path), want, "{path:?}");
        }
    }

    #[test]
    fn invalid_patterns_name_the_key() {
        let cases: &[(&[&str], &[&str], &str, &str)] = &[
            (&["[abc"], &[], "include", "[abc"),
            (&[], &["*.{a,b"], "exclude", "*.{a,b"),
            (&[], &["x/[z-a]"], "exclude", "x/[z-a]"),
            (&["ok", "re:(unclosed"], &[], "include", "re:(unclosed"),
            (&[], &["re:*"], "exclude", "re:*"),
            (&[], &[""], "exclude", ""),
            (&["/"], &[], "include", "/"),
            (&[], &["re:"], "exclude", "re:"),
        ];
        for &(include, exclude, key, pattern) in cases {
            let err = Filter::new(&strings(include), &strings(exclude))
                .expect_err(&format!("{include:?} {exclude:?} should fail"));
            assert_eq!(err.key, key, "{pattern:?}");
            assert_eq!(err.pattern, pattern);
            assert!(!err.reason.is_empty());
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid {key} pattern {pattern:?}: ")),
                "{msg}"
            );
        }
    }

    #[test]
    fn filter_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug>() {}
        assert_traits::<Filter>();
        let f = filter(&["*.pdf"], &["x*"]);
        let g = f.clone();
        assert!(g.includes_file("a.pdf"));
        assert!(!g.includes_file("x.pdf"));
        assert_eq!(
            format!("{f:?}"),
            r#"Filter { include: ["*.pdf"], exclude: ["x*"] }"#
        );
    }

    /// 100,000 paths with a config that uses every kind of pattern. The bound is loose so that
    /// unoptimised builds on a busy machine pass; in release this takes 5 to 20 ms.
    #[test]
    fn matching_is_fast() {
        let f = filter(
            &[
                "*.pdf",
                "invoices/**",
                "docs/*.md",
                "re:^report-\\d+\\.csv$",
            ],
            &["*.tmp", "~$*", "build", "**/.git", "cache/", "re:\\.bak$"],
        );
        let paths: Vec<String> = (0..100_000)
            .map(|i| {
                let ext = ["pdf", "tmp", "md", "txt", "bak"][i % 5];
                format!("dir{}/sub{}/deeper{}/file{i}.{ext}", i % 7, i % 13, i % 3)
            })
            .collect();
        let start = std::time::Instant::now();
        let kept = paths.iter().filter(|p| f.includes_file(p)).count();
        let elapsed = start.elapsed();
        assert_eq!(kept, 20_000);
        assert!(elapsed.as_millis() < 2_000, "took {elapsed:?}");
    }
}
