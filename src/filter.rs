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
//! Implementation note: "some ancestor directory of `p` matches glob `G`" is exactly "`p` matches
//! `G/**`" (with `*` not crossing `/`, the part before the `/` that `G/**` requires is a proper
//! prefix of `p` ending at a segment boundary, i.e. an ancestor directory). So every glob list
//! is compiled into a single [`GlobSet`] that already covers ancestors, and one glob-set lookup
//! per path suffices. Only `re:` patterns need an explicit walk over the ancestors.

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
        Ok(Filter {
            include: PatternList::new("include", include)?,
            exclude: PatternList::new("exclude", exclude)?,
        })
    }

    /// Is this file visible to the job? Exclude wins over include; an empty include list
    /// includes everything. A file below an excluded directory is excluded; a file below an
    /// included directory is included.
    ///
    /// Paths are relative to the job root, `/`-separated, no leading `/`.
    pub fn includes_file(&self, path: &str) -> bool {
        if self.exclude.matches(path, Kind::File) {
            return false;
        }
        !self.include.is_active() || self.include.matches(path, Kind::File)
    }

    /// Should the walk prune this directory (with all of its contents)? True only when the
    /// directory, or one of its ancestors, matches an exclude pattern. Include patterns never
    /// prune directories. The root (`""`) is never excluded.
    pub fn excludes_dir(&self, path: &str) -> bool {
        !path.is_empty() && self.exclude.matches(path, Kind::Dir)
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
    /// Globs that apply to files: non-directory globs, plus the ancestor form (`G/**`) of every
    /// glob.
    file_globs: GlobSet,
    /// Globs that apply to directories: every glob, plus its ancestor form.
    dir_globs: GlobSet,
    /// `dir_globs` plus `P` for every glob `P/**` (only built for the include list).
    include_dir_globs: GlobSet,
    /// `re:` patterns, searched in the path and in each ancestor directory's path.
    regexes: RegexSet,
}

impl std::fmt::Debug for PatternList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The compiled matchers are large and say nothing useful; show the patterns.
        self.patterns.fmt(f)
    }
}

impl PatternList {
    fn new(key: &'static str, patterns: &[String]) -> Result<PatternList, FilterError> {
        let mut file_globs = GlobSetBuilder::new();
        let mut dir_globs = GlobSetBuilder::new();
        let mut include_dir_globs = GlobSetBuilder::new();
        let mut regexes = Vec::new();

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
                continue;
            }

            let (glob, dir_only) =
                normalize_glob(pattern).ok_or_else(|| err("empty glob".into()))?;
            // Validate the glob as written first, so errors name the user's pattern.
            let own = compile_glob(&glob).map_err(&err)?;
            // Ancestor form: `G/**` matches every path below a directory matching `G`. Globs that
            // already end in `**` cover their descendants themselves.
            let descendants = if glob == "**" || glob.ends_with("/**") {
                None
            } else {
                Some(compile_glob(&format!("{glob}/**")).map_err(&err)?)
            };
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
            if key == "include" {
                if let Some(parent) = glob.strip_suffix("/**") {
                    include_dir_globs.add(compile_glob(parent).map_err(&err)?);
                }
            }
        }

        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| FilterError {
                key,
                pattern: patterns.join(", "),
                reason: e.to_string(),
            })
        };
        let regexes = RegexSet::new(&regexes).map_err(|e| FilterError {
            key,
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(PatternList {
            file_globs: build(file_globs)?,
            dir_globs: build(dir_globs)?,
            include_dir_globs: build(include_dir_globs)?,
            regexes,
            patterns: patterns.to_vec(),
        })
    }

    fn is_active(&self) -> bool {
        !self.patterns.is_empty()
    }

    fn matches(&self, path: &str, kind: Kind) -> bool {
        let globs = match kind {
            Kind::File => &self.file_globs,
            Kind::Dir => &self.dir_globs,
            Kind::IncludeDir => &self.include_dir_globs,
        };
        if globs.is_match_candidate(&Candidate::from_bytes(path.as_bytes())) {
            return true;
        }
        if self.regexes.is_empty() {
            return false;
        }
        if self.regexes.is_match(path) {
            return true;
        }
        // Ancestor directories, e.g. `a` and `a/b` for `a/b/c`.
        path.match_indices('/')
            .any(|(i, _)| i > 0 && self.regexes.is_match(&path[..i]))
    }
}

/// Turns a configured glob into an anchored globset pattern. Returns the pattern and whether it
/// applies to directories only (trailing `/`), or `None` when nothing is left of it.
fn normalize_glob(pattern: &str) -> Option<(String, bool)> {
    let trimmed = pattern.trim_end_matches('/');
    let dir_only = trimmed.len() != pattern.len();
    let anchored = trimmed.contains('/');
    let body = trimmed.trim_start_matches('/');
    if body.is_empty() {
        return None;
    }
    let glob = if anchored {
        body.to_owned()
    } else {
        // A pattern without `/` matches the base name at any depth.
        format!("**/{body}")
    };
    Some((glob, dir_only))
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

    /// Checks `includes_file` for a single include pattern (and no excludes).
    fn check_include(pattern: &str, cases: Cases) {
        let f = filter(&[pattern], &[]);
        for &(path, want) in cases {
            assert_eq!(
                f.includes_file(path),
                want,
                "include {pattern:?} on file {path:?}"
            );
        }
    }

    /// Checks `includes_file` for a single exclude pattern (and no includes).
    fn check_exclude(pattern: &str, cases: Cases) {
        let f = filter(&[], &[pattern]);
        for &(path, excluded) in cases {
            assert_eq!(
                f.includes_file(path),
                !excluded,
                "exclude {pattern:?} on file {path:?}"
            );
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

    /// 100,000 paths with a realistic config. The bound is loose so that debug builds pass; in
    /// release this runs in a few milliseconds.
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
