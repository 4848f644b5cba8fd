//! Loading resources from YAML and JSON: files, directories and stdin.
//!
//! What this module owns and promises:
//! - Input is a file (YAML, or JSON if it ends in `.json`), a directory (every `*.yaml`,
//!   `*.yml` and `*.json` below it, recursively, in sorted path order) or stdin (`-`, YAML
//!   or JSON). A file may hold many YAML documents (`---`) or concatenated JSON values;
//!   a document may be a `kind: List` (or a typed list such as `NetworkPolicyList`) whose
//!   `items` are resources. Empty documents are skipped but still counted, so document
//!   numbers match what a reader counts in the file.
//! - Each document is dispatched on `apiVersion` + `kind`; unknown pairs are rejected with
//!   the list of accepted ones. Unknown fields are rejected with their path.
//! - Only regular files (and symlinks to them) are read, whether named or found in a
//!   directory: a FIFO, socket, device or dangling symlink is an I/O error naming it
//!   (a FIFO would block the load).
//! - Every problem becomes a [`LoadError`] printed as `FILE:DOC: FIELD: REASON` (DOC is
//!   1-based; fields inside a List item start with `items[i].`; stdin is `<stdin>`).
//!   All errors of a load are collected, every problem of every document (a value that
//!   does not decode is dropped and the document decoded again, so later problems and
//!   validation are still reported), up to [`MAX_REPORTED_ERRORS`] then a count; a load
//!   with any error yields no resources.
//! - [`load_set`] also rejects a set of zero resources (unless allowed) and returns a
//!   [`LoadReport`]: what was read, and the resources Calico's defaulting placed in
//!   namespace `default`.
//! - [`load_path`], [`load_paths`], [`load_str`] decode, apply Calico defaulting
//!   ([`super::defaults`]) and validate ([`super::validate`]) each resource, and reject a
//!   set that defines the same resource twice. [`parse_str`] only decodes.
//! - YAML is read with the YAML 1.2 core schema: only `true`/`false` are booleans
//!   (`yes`, `no`, `on`, `y`, `n` are strings, unlike YAML 1.1 readers).
//! - Hostile input is bounded: file size, total size, file count, documents per file,
//!   resources per load, YAML nesting depth and alias expansion are capped, and every cap
//!   is reported as an error naming the input.
//! - How it is read does not show in the result. A YAML stream whose documents are
//!   separated by bare `---` lines is cut at those lines, and a document of the plainest
//!   shape is read by a small line reader (`simple_yaml`) into the same value
//!   serde-saphyr builds; any other stream goes through the event parser's split, any
//!   other document through serde-saphyr, and a stream with a document that fails to
//!   parse is read again the old way, so errors are worded and numbered as they always
//!   were. The files of a directory (or the documents of one long stream) are parsed
//!   on every core and merged in order: resources, errors, caps and report are those
//!   of reading everything one by one. Property tests compare each shortcut with the
//!   path it stands for.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};
use serde_saphyr::granit_parser::{self, Event, ScalarStyle};

use super::types::{CALICO_API, K8S_CORE_API, Kind, Object, ObjectMeta, Resource, ResourceKey};
use super::{defaults, validate};
use crate::store::Outline;

/// Largest file (or stdin) accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest total input of one load, in bytes.
pub const MAX_TOTAL_BYTES: u64 = 128 << 20;
/// Most files one directory load reads.
pub const MAX_FILES: usize = 10_000;
/// Deepest directory nesting followed.
pub const MAX_DIR_DEPTH: usize = 32;
/// Most documents in one file (empty ones included).
pub const MAX_DOCUMENTS: usize = 10_000;
/// Most resources in one load (List items included).
pub const MAX_RESOURCES: usize = 100_000;

/// Most errors one load reports; the rest are counted in a last line
/// (`...: and N more errors`).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The name under which stdin appears in errors.
pub const STDIN_NAME: &str = "<stdin>";

/// Where a resource came from: file (or `<stdin>`), 1-based document number, and the
/// index in the document's `items` when the document is a List.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// File path as given (or found in a directory), or `<stdin>`.
    pub source: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 0-based index in a List document's `items`.
    pub item: Option<usize>,
}

impl Origin {
    /// Prefix of field paths inside this resource (`items[3].` for List items).
    pub fn field_prefix(&self) -> String {
        match self.item {
            Some(i) => format!("items[{i}]."),
            None => String::new(),
        }
    }

    /// A field path inside this resource, prefixed for List items.
    pub fn field(&self, path: &str) -> String {
        format!("{}{path}", self.field_prefix())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.document)?;
        if let Some(i) = self.item {
            write!(f, " items[{i}]")?;
        }
        Ok(())
    }
}

/// A resource and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The resource (defaulted and validated when it came from a `load_*` function).
    pub resource: Resource,
    /// Where it came from.
    pub origin: Origin,
}

/// What kind of failure a [`LoadError`] is: the CLI maps `Io` to exit code 2 and
/// `Invalid` to exit code 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadErrorKind {
    /// The input could not be read (missing file, permission, not a file or directory).
    Io,
    /// The input was read but is not a valid resource set.
    Invalid,
}

/// One problem with the input, naming the file, the document, the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadError {
    /// File path or `<stdin>`.
    pub source: String,
    /// 1-based document number, when the problem is inside a document.
    pub document: Option<usize>,
    /// Field path (`spec.ingress[0].protocol`, `items[2].metadata.name`), when known.
    pub field: Option<String>,
    /// What is wrong and what would be accepted.
    pub reason: String,
    /// I/O or invalid input.
    pub kind: LoadErrorKind,
}

impl LoadError {
    /// An error about a field of the resource at `origin`; `field` is relative to the
    /// resource (the List item prefix is added here).
    pub fn at(origin: &Origin, field: &str, reason: impl Into<String>) -> LoadError {
        LoadError {
            source: origin.source.clone(),
            document: Some(origin.document),
            field: (!field.is_empty() || origin.item.is_some()).then(|| {
                let f = origin.field(field);
                f.trim_end_matches('.').to_string()
            }),
            reason: reason.into(),
            kind: LoadErrorKind::Invalid,
        }
    }

    fn document(source: &str, document: usize, reason: impl Into<String>) -> LoadError {
        LoadError {
            source: source.to_string(),
            document: Some(document),
            field: None,
            reason: reason.into(),
            kind: LoadErrorKind::Invalid,
        }
    }

    fn file(source: &str, kind: LoadErrorKind, reason: impl Into<String>) -> LoadError {
        LoadError {
            source: source.to_string(),
            document: None,
            field: None,
            reason: reason.into(),
            kind,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(d) = self.document {
            write!(f, ":{d}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// All problems of one load, in input order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    /// Whether any error is an I/O error (the input could not be read at all).
    pub fn is_io(&self) -> bool {
        self.0.iter().any(|e| e.kind == LoadErrorKind::Io)
    }

    /// The errors.
    pub fn errors(&self) -> &[LoadError] {
        &self.0
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Public entry points

/// Loads, defaults and validates everything at `path`: a file, a directory (recursively)
/// or `-` for stdin. Atomic: any error means no resources.
pub fn load_path(path: &Path) -> Result<Vec<Loaded>, LoadErrors> {
    load_paths(&[path])
}

/// Loads several paths as one set (as repeated `-f` flags do). Atomic.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Loaded>, LoadErrors> {
    let mut loader = Loader::new(true);
    for p in paths {
        loader.path(p.as_ref());
    }
    loader.finish()
}

/// [`load_set`] (any number of resources, an empty set included) keeping only the
/// [`Outline`] of each resource, which is dropped once defaulted and validated: what
/// checking a set needs, without holding it.
pub(crate) fn load_outlines<P: AsRef<Path>>(
    paths: &[P],
) -> Result<(Vec<Outline>, LoadReport), LoadErrors> {
    let mut loader = Loader::new(true);
    loader.outline = true;
    for p in paths {
        loader.path(p.as_ref());
    }
    let (_, outlines, report) = loader.finish_all()?;
    Ok((outlines, report))
}

/// What a load read, beside the resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Files read (stdin counts as one).
    pub files: usize,
    /// Non-empty documents read.
    pub documents: usize,
    /// Per file, the namespaced resources that named no namespace and were placed in
    /// `default` (Calico's defaulting), in file order.
    pub default_namespace: Vec<(String, usize)>,
}

impl LoadReport {
    /// The notes a user should see: `FILE: note: N namespaced resources without
    /// metadata.namespace placed in namespace default`.
    pub fn notes(&self) -> Vec<String> {
        self.default_namespace
            .iter()
            .map(|(file, n)| {
                format!(
                    "{file}: note: {n} namespaced resource{} without metadata.namespace placed in namespace {}",
                    if *n == 1 { "" } else { "s" },
                    defaults::DEFAULT_NAMESPACE
                )
            })
            .collect()
    }
}

/// Loads several paths as one set, like [`load_paths`], and also says what was read.
/// A set of zero resources is an error naming what was read (a wrong path must not
/// pass as an empty policy set) unless `allow_empty`.
pub fn load_set<P: AsRef<Path>>(
    paths: &[P],
    allow_empty: bool,
) -> Result<(Vec<Loaded>, LoadReport), LoadErrors> {
    let mut loader = Loader::new(true);
    for p in paths {
        loader.path(p.as_ref());
    }
    let (loaded, report) = loader.finish_with_report()?;
    if loaded.is_empty() && !allow_empty {
        return Err(LoadErrors(vec![empty_set_error(paths, &report)]));
    }
    Ok((loaded, report))
}

/// The error of a set of zero resources read from `paths`: it names what was read and
/// what to do (check the path, or allow an empty set).
pub fn empty_set_error<P: AsRef<Path>>(paths: &[P], report: &LoadReport) -> LoadError {
    let names = paths
        .iter()
        .map(|p| p.as_ref().display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    LoadError::file(
        &names,
        LoadErrorKind::Invalid,
        format!(
            "no resources found ({} read, {} with a resource; a directory is searched for *.yaml, *.yml and *.json): check the -f path, or pass --allow-empty if an empty set is intended",
            plural(report.files, "file"),
            plural(report.documents, "document")
        ),
    )
}

/// How text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (multi-document; JSON is read as YAML too).
    Yaml,
    /// A stream of JSON values (the reader for `*.json` files).
    Json,
}

/// Loads, defaults and validates `text` (YAML, which includes JSON) named `source` in
/// errors.
pub fn load_str(text: &str, source: &str) -> Result<Vec<Loaded>, LoadErrors> {
    load_text(text, source, Format::Yaml)
}

/// Loads, defaults and validates `text` read as `format`.
pub fn load_text(text: &str, source: &str, format: Format) -> Result<Vec<Loaded>, LoadErrors> {
    let mut loader = Loader::new(true);
    loader.text(text, source, format == Format::Json);
    loader.finish()
}

/// Reads `reader` to the end (bounded by [`MAX_FILE_BYTES`]) and loads it like
/// [`load_str`].
pub fn load_reader(reader: impl Read, source: &str) -> Result<Vec<Loaded>, LoadErrors> {
    let mut loader = Loader::new(true);
    loader.reader(reader, source, false);
    loader.finish()
}

/// Decodes `text` without defaulting or validating (types and unknown fields are still
/// checked). For tools that want the resources exactly as written.
pub fn parse_str(text: &str, source: &str) -> Result<Vec<Loaded>, LoadErrors> {
    let mut loader = Loader::new(false);
    loader.text(text, source, false);
    loader.finish()
}

// ---------------------------------------------------------------------------------
// The loader
//
// A load reads its sources in order (the size caps are counted in that order), parses
// each source on its own into [`SourceItems`] (several files of a directory at once,
// one per core), and merges those in source order: the resource cap, the error cap,
// the report and the resources come out exactly as a one-by-one load would give them.

struct Loader {
    process: bool,
    /// Keep only each valid resource's [`Outline`] (in `outlines`), not the resource.
    outline: bool,
    loaded: Vec<Loaded>,
    outlines: Vec<Outline>,
    errors: Vec<LoadError>,
    /// Errors found beyond [`MAX_REPORTED_ERRORS`].
    unreported: usize,
    total_bytes: u64,
    resources: usize,
    resource_cap_reported: bool,
    report: LoadReport,
}

/// A source read to the end, or why it could not be (in source order).
enum SourceText {
    Text {
        name: String,
        text: String,
        json: bool,
    },
    Failed(LoadError),
}

/// A file of a directory read and parsed on a parse thread: its size (`None` when it
/// was not read: unreadable or over [`MAX_FILE_BYTES`], not counted), and what it
/// holds or why it holds nothing.
struct ParsedFile {
    name: String,
    len: Option<u64>,
    outcome: Result<SourceItems, LoadError>,
}

impl ParsedFile {
    fn of(path: &Path, process: bool, outline: bool) -> ParsedFile {
        match RawSource::file(path) {
            RawSource::Failed(e) => ParsedFile {
                name: path.display().to_string(),
                len: None,
                outcome: Err(e),
            },
            RawSource::Read { name, bytes, json } => {
                let len = Some(bytes.len() as u64);
                let outcome = match SourceText::of(name.clone(), bytes, json) {
                    SourceText::Text { name, text, json } => {
                        Ok(SourceItems::parse(&text, &name, json, process, outline, 1))
                    }
                    SourceText::Failed(e) => Err(e),
                };
                ParsedFile { name, len, outcome }
            }
        }
    }
}

/// A source as read, before it is counted against the load's total size.
enum RawSource {
    Read {
        name: String,
        bytes: Vec<u8>,
        json: bool,
    },
    /// Unreadable, or larger than [`MAX_FILE_BYTES`] (not counted).
    Failed(LoadError),
}

impl RawSource {
    fn file(path: &Path) -> RawSource {
        let name = path.display().to_string();
        let json = path.extension().is_some_and(|e| e == "json");
        match std::fs::File::open(path) {
            Ok(f) => RawSource::read(f, &name, json),
            Err(e) => RawSource::Failed(LoadError::file(
                &name,
                LoadErrorKind::Io,
                format!("cannot read: {e}"),
            )),
        }
    }

    /// Reads a source to the end (at most [`MAX_FILE_BYTES`]).
    fn read(reader: impl Read, source: &str, json: bool) -> RawSource {
        let fail = |kind, reason: String| RawSource::Failed(LoadError::file(source, kind, reason));
        let mut bytes = Vec::new();
        if let Err(e) = reader.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            return fail(LoadErrorKind::Io, format!("cannot read: {e}"));
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return fail(
                LoadErrorKind::Invalid,
                format!("input is larger than the {MAX_FILE_BYTES}-byte limit"),
            );
        }
        RawSource::Read {
            name: source.to_string(),
            bytes,
            json,
        }
    }
}

impl SourceText {
    /// The text of a source read, or why it is not text.
    fn of(name: String, bytes: Vec<u8>, json: bool) -> SourceText {
        match String::from_utf8(bytes) {
            Ok(text) => SourceText::Text { name, text, json },
            Err(e) => SourceText::Failed(LoadError::file(
                &name,
                LoadErrorKind::Invalid,
                format!(
                    "not valid UTF-8 (first bad byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )),
        }
    }
}

impl Loader {
    fn new(process: bool) -> Loader {
        Loader {
            process,
            outline: false,
            loaded: Vec::new(),
            outlines: Vec::new(),
            errors: Vec::new(),
            unreported: 0,
            total_bytes: 0,
            resources: 0,
            resource_cap_reported: false,
            report: LoadReport::default(),
        }
    }

    /// Records an error; past [`MAX_REPORTED_ERRORS`] only counts it.
    fn push_error(&mut self, e: LoadError) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(e);
        } else {
            self.unreported += 1;
        }
    }

    fn finish(self) -> Result<Vec<Loaded>, LoadErrors> {
        self.finish_with_report().map(|(l, _)| l)
    }

    fn finish_with_report(self) -> Result<(Vec<Loaded>, LoadReport), LoadErrors> {
        self.finish_all().map(|(l, _, r)| (l, r))
    }

    #[allow(clippy::type_complexity)]
    fn finish_all(mut self) -> Result<(Vec<Loaded>, Vec<Outline>, LoadReport), LoadErrors> {
        if self.process && self.errors.is_empty() {
            let mut dups = Vec::new();
            let loaded = self.loaded.iter().map(|l| (l.resource.key(), &l.origin));
            check_duplicates(loaded, &mut dups);
            check_duplicates(self.outlines.iter().map(|o| (&o.key, &o.origin)), &mut dups);
            for e in dups {
                self.push_error(e);
            }
        }
        let mut errors = self.errors;
        if self.unreported > 0 {
            errors.push(LoadError {
                source: "...".to_string(),
                document: None,
                field: None,
                reason: format!(
                    "and {} more errors (only the first {MAX_REPORTED_ERRORS} are reported)",
                    self.unreported
                ),
                kind: LoadErrorKind::Invalid,
            });
        }
        if errors.is_empty() {
            Ok((self.loaded, self.outlines, self.report))
        } else {
            Err(LoadErrors(errors))
        }
    }

    fn path(&mut self, path: &Path) {
        if path.as_os_str() == "-" {
            self.report.files += 1;
            let read = self.read(std::io::stdin().lock(), STDIN_NAME, false);
            self.parse_and_merge(read);
            return;
        }
        let name = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) => self.push_error(LoadError::file(
                &name,
                LoadErrorKind::Io,
                unreadable_reason(path, &e),
            )),
            Ok(m) if m.is_dir() => {
                let mut files = Vec::new();
                if let Err(e) = collect_files(path, 0, &mut files) {
                    self.push_error(e);
                    return;
                }
                files.sort();
                self.parse_files(&files);
            }
            Ok(m) if m.is_file() => {
                let text = self.file(path);
                self.parse_and_merge(text);
            }
            Ok(m) => self.push_error(LoadError::file(
                &name,
                LoadErrorKind::Io,
                not_a_file_reason(&m),
            )),
        }
    }

    fn file(&mut self, path: &Path) -> SourceText {
        self.report.files += 1;
        let read = RawSource::file(path);
        self.count(read)
    }

    /// Reads a source to the end, counting it against the load's total size.
    fn read(&mut self, reader: impl Read, source: &str, json: bool) -> SourceText {
        let read = RawSource::read(reader, source, json);
        self.count(read)
    }

    /// Counts `len` bytes of source `name` against the load's total size: the error
    /// of the source that takes it past [`MAX_TOTAL_BYTES`] (and of every one after).
    fn count_bytes(&mut self, name: &str, len: u64) -> Result<(), LoadError> {
        self.total_bytes += len;
        if self.total_bytes > MAX_TOTAL_BYTES {
            return Err(LoadError::file(
                name,
                LoadErrorKind::Invalid,
                format!("total input is larger than the {MAX_TOTAL_BYTES}-byte limit"),
            ));
        }
        Ok(())
    }

    /// A source read, counted against the load's total size (in the order of the
    /// sources, as they are merged).
    fn count(&mut self, read: RawSource) -> SourceText {
        match read {
            RawSource::Failed(e) => SourceText::Failed(e),
            RawSource::Read { name, bytes, json } => {
                match self.count_bytes(&name, bytes.len() as u64) {
                    Ok(()) => SourceText::of(name, bytes, json),
                    Err(e) => SourceText::Failed(e),
                }
            }
        }
    }

    fn reader(&mut self, reader: impl Read, source: &str, json: bool) {
        let read = self.read(reader, source, json);
        self.parse_and_merge(read);
    }

    fn text(&mut self, text: &str, source: &str, json: bool) {
        let items = SourceItems::parse(
            text,
            source,
            json,
            self.process,
            self.outline,
            parse_threads(),
        );
        self.merge(items);
    }

    /// Reads and parses `files` on one thread per core kept for the whole set (each
    /// takes the next file; the text is allocated, read and freed on the thread that
    /// parses it), and merges their outcomes in file order as they come, counting
    /// each against the load's total size in that order.
    fn parse_files(&mut self, files: &[PathBuf]) {
        if let [one] = files {
            // One file alone has its documents read on every core.
            let text = self.file(one);
            self.parse_and_merge(text);
            return;
        }
        let (process, outline) = (self.process, self.outline);
        let threads = parse_threads().min(files.len());
        let (jobs, todo) = crossbeam::channel::unbounded::<(usize, &PathBuf)>();
        let (done, parsed) = crossbeam::channel::unbounded::<(usize, ParsedFile)>();
        for job in files.iter().enumerate() {
            // Unbounded, and the receiver is alive: cannot fail.
            let _ = jobs.send(job);
        }
        drop(jobs);
        std::thread::scope(|scope| {
            let mut started = 0;
            if threads > 1 {
                for _ in 0..threads {
                    let (todo, done) = (todo.clone(), done.clone());
                    let work = move || {
                        for (i, path) in todo {
                            let file = ParsedFile::of(path, process, outline);
                            crate::sys::release_free_memory();
                            if done.send((i, file)).is_err() {
                                return;
                            }
                        }
                    };
                    // A thread that cannot start drops its channel ends with `work`.
                    if std::thread::Builder::new()
                        .stack_size(PARSE_STACK)
                        .spawn_scoped(scope, work)
                        .is_ok()
                    {
                        started += 1;
                    }
                }
            }
            drop(done);
            if started == 0 {
                // One core, or no thread could be started: in order, here.
                for (_, path) in todo {
                    self.merge_file(ParsedFile::of(path, process, outline));
                }
                return;
            }
            // Outcomes that arrived before the ones ahead of them in file order.
            let mut waiting = std::collections::BTreeMap::new();
            let mut next = 0;
            for (i, file) in parsed.iter() {
                waiting.insert(i, file);
                while let Some(file) = waiting.remove(&next) {
                    self.merge_file(file);
                    next += 1;
                }
            }
        });
    }

    /// Adds one file read and parsed by [`Loader::parse_files`].
    fn merge_file(&mut self, file: ParsedFile) {
        self.report.files += 1;
        if let Some(len) = file.len
            && let Err(e) = self.count_bytes(&file.name, len)
        {
            self.push_error(e);
            return;
        }
        match file.outcome {
            Ok(items) => self.merge(items),
            Err(e) => self.push_error(e),
        }
    }

    /// Parses one source, its documents read on every core, and merges it.
    fn parse_and_merge(&mut self, source: SourceText) {
        match source {
            SourceText::Failed(e) => self.push_error(e),
            SourceText::Text { name, text, json } => {
                let items = SourceItems::parse(
                    &text,
                    &name,
                    json,
                    self.process,
                    self.outline,
                    parse_threads(),
                );
                self.merge(items);
            }
        }
    }

    /// Adds one source's outcome: its errors, and its resources up to the load's cap.
    fn merge(&mut self, source: SourceItems) {
        self.report.documents += source.documents;
        for item in source.items {
            match item {
                Item::Error(e) => self.push_error(e),
                Item::Resource(r) => self.resource(r),
            }
        }
    }

    fn resource(&mut self, r: ResourceItem) {
        self.resources += 1;
        if self.resources > MAX_RESOURCES {
            if !self.resource_cap_reported {
                self.resource_cap_reported = true;
                self.push_error(LoadError::at(
                    &r.origin,
                    "",
                    format!("more than {MAX_RESOURCES} resources in one load"),
                ));
            }
            return;
        }
        if r.namespace_defaulted {
            match self.report.default_namespace.last_mut() {
                Some((file, n)) if *file == r.origin.source => *n += 1,
                _ => self
                    .report
                    .default_namespace
                    .push((r.origin.source.clone(), 1)),
            }
        }
        for e in r.errors {
            self.push_error(e);
        }
        self.unreported += r.unreported;
        match r.kept {
            Some(Kept::Whole(resource)) => self.loaded.push(Loaded {
                resource,
                origin: r.origin,
            }),
            Some(Kept::Outline(key, tier)) => self.outlines.push(Outline {
                key,
                origin: r.origin,
                tier,
            }),
            None => {}
        }
    }
}

/// Fewest documents of one source worth a thread of their own.
const MIN_DOCUMENTS_PER_THREAD: usize = 64;

/// How many sources are parsed at once: one per core, at most 8.
/// Stack of a parse thread: the main thread's usual 8 MiB, so a document nested as
/// deep as the parser allows parses on any thread.
const PARSE_STACK: usize = 8 << 20;

/// `parse` on a thread of `scope` with [`PARSE_STACK`], or, if no thread can be
/// started, run here.
fn spawn_parse<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    parse: impl FnOnce() -> T + Send + Copy + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>, T> {
    std::thread::Builder::new()
        .stack_size(PARSE_STACK)
        .spawn_scoped(scope, parse)
        .map_err(|_| parse())
}

/// The result of [`spawn_parse`]; a panic on the parse thread goes on here.
fn join_parse<T>(started: Result<std::thread::ScopedJoinHandle<'_, T>, T>) -> T {
    match started {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        Err(done) => done,
    }
}

/// Threads a long source is parsed on: the cores this process may use, at most 8.
/// Asked once per process: `available_parallelism` reads the cgroup quota files on
/// every call, which cost a daemon's one-pod `apply` more than parsing the pod did.
fn parse_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8)))
}

/// What one source holds, in input order, before the load-wide caps: its problems and
/// its resources.
#[derive(Default)]
struct SourceItems {
    process: bool,
    outline: bool,
    items: Vec<Item>,
    /// Non-empty documents.
    documents: usize,
    /// Problems stored. Document-level ones always are (a later resource over the
    /// load's cap drops its own problems, so they may still be reported); a resource's
    /// only while fewer than [`MAX_REPORTED_ERRORS`] were stored: every stored problem
    /// before it is then reported first, so it never can be.
    stored_errors: usize,
}

// Nearly every item is a resource: boxing it would only add an allocation each.
#[allow(clippy::large_enum_variant)]
enum Item {
    /// A problem outside any resource (syntax, not a mapping, no kind, a bad List).
    Error(LoadError),
    /// A resource: counted against the load's cap whether valid or not.
    Resource(ResourceItem),
}

struct ResourceItem {
    origin: Origin,
    /// Decoded, namespaced, without a namespace (placed in `default` when processed).
    namespace_defaulted: bool,
    /// Its problems, in order.
    errors: Vec<LoadError>,
    /// Its problems beyond what the source stores.
    unreported: usize,
    /// What is kept of the resource when it has no problem.
    kept: Option<Kept>,
}

/// What a load keeps of a valid resource: the resource, or only the key and tier of its
/// [`Outline`] (the resource is dropped on the thread that read it; the merge moves
/// the origin in). One kind per load: boxing would only add an allocation to every
/// whole resource.
#[allow(clippy::large_enum_variant)]
enum Kept {
    Whole(Resource),
    Outline(ResourceKey, Option<String>),
}

impl ResourceItem {
    fn new(origin: Origin) -> ResourceItem {
        ResourceItem {
            origin,
            namespace_defaulted: false,
            errors: Vec::new(),
            unreported: 0,
            kept: None,
        }
    }
}

impl SourceItems {
    /// Parses one source, its documents on up to `threads` threads.
    fn parse(
        text: &str,
        source: &str,
        json: bool,
        process: bool,
        outline: bool,
        threads: usize,
    ) -> SourceItems {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut items = SourceItems {
            process,
            outline,
            ..SourceItems::default()
        };
        if json {
            items.json_text(text, source);
        } else if let Some(fast) = SourceItems::yaml_marked(text, source, process, outline, threads)
        {
            items = fast;
        } else {
            items.yaml_text(text, source);
        }
        items
    }

    fn push_error(&mut self, e: LoadError) {
        self.stored_errors += 1;
        self.items.push(Item::Error(e));
    }

    fn resource_error(&mut self, r: &mut ResourceItem, e: LoadError) {
        if self.stored_errors < MAX_REPORTED_ERRORS {
            self.stored_errors += 1;
            r.errors.push(e);
        } else {
            r.unreported += 1;
        }
    }

    fn json_text(&mut self, text: &str, source: &str) {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let mut document = 0;
        loop {
            document += 1;
            if document > MAX_DOCUMENTS {
                self.push_error(LoadError::document(
                    source,
                    document,
                    format!("more than {MAX_DOCUMENTS} documents in one file"),
                ));
                return;
            }
            match stream.next() {
                None => return,
                Some(Ok(value)) => {
                    if !value.is_null() {
                        self.documents += 1;
                    }
                    self.document(value, source, document)
                }
                Some(Err(e)) => {
                    self.push_error(LoadError::document(
                        source,
                        document,
                        format!(
                            "JSON syntax error at line {} column {}: {}",
                            e.line(),
                            e.column(),
                            json_error_message(&e)
                        ),
                    ));
                    // A JSON stream cannot resynchronise after a syntax error.
                    return;
                }
            }
        }
    }

    /// The common case, without the event parser's split: a stream whose documents are
    /// separated by bare `---` lines (no directives, no `...`, nothing after a marker),
    /// each of which parses. `None` (nothing of it kept) when the stream is anything
    /// else or a document fails to parse: [`SourceItems::yaml_text`] then reads it and
    /// reports exactly where it fails.
    ///
    /// With `threads` > 1 a long stream is cut into that many runs of documents, read at
    /// once and joined in order (each run keeps its own error budget, which only ever
    /// stores more).
    fn yaml_marked(
        text: &str,
        source: &str,
        process: bool,
        outline: bool,
        threads: usize,
    ) -> Option<SourceItems> {
        let documents = split_marked_documents(text)?;
        let runs = threads
            .min(documents.len() / MIN_DOCUMENTS_PER_THREAD)
            .max(1);
        let read = |first: usize, docs: &[MarkedDocument<'_>]| {
            SourceItems::marked_run(docs, first, source, process, outline)
        };
        if runs == 1 {
            return read(0, &documents);
        }
        let per_run = documents.len().div_ceil(runs);
        let parts: Vec<Option<SourceItems>> = std::thread::scope(|scope| {
            let rest: Vec<_> = (1..runs)
                .map(|r| {
                    let start = (r * per_run).min(documents.len());
                    let end = ((r + 1) * per_run).min(documents.len());
                    let docs = &documents[start..end];
                    spawn_parse(scope, move || read(start, docs))
                })
                .collect();
            let mut parts = vec![read(0, &documents[..per_run.min(documents.len())])];
            parts.extend(rest.into_iter().map(join_parse));
            parts
        });
        let mut all = SourceItems {
            process,
            outline,
            ..SourceItems::default()
        };
        for part in parts {
            let part = part?;
            all.items.extend(part.items);
            all.documents += part.documents;
            all.stored_errors += part.stored_errors;
        }
        Some(all)
    }

    /// The documents `docs` of a marked stream, the first being number `first + 1`.
    fn marked_run(
        docs: &[MarkedDocument<'_>],
        first: usize,
        source: &str,
        process: bool,
        outline: bool,
    ) -> Option<SourceItems> {
        let mut items = SourceItems {
            process,
            outline,
            ..SourceItems::default()
        };
        for (i, doc) in docs.iter().enumerate() {
            if doc.null {
                continue;
            }
            let value = match simple_yaml::parse(doc.text) {
                Some(value) => value,
                None => {
                    serde_saphyr::from_str_with_options::<Value>(doc.text, saphyr_options()).ok()?
                }
            };
            if value.is_null() {
                // `!!null`, an anchored `~`: the event split decides how it counts.
                return None;
            }
            items.documents += 1;
            items.document(value, source, first + i + 1);
        }
        Some(items)
    }

    fn yaml_text(&mut self, text: &str, source: &str) {
        let split = split_yaml_documents(text);
        for doc in split.documents {
            if doc.null {
                continue;
            }
            self.documents += 1;
            match serde_saphyr::from_str_with_options::<Value>(doc.text, saphyr_options()) {
                Ok(value) => self.document(value, source, doc.number),
                Err(e) => self.push_error(LoadError::document(
                    source,
                    doc.number,
                    saphyr_error_message(&e, doc.first_line),
                )),
            }
        }
        if let Some(e) = split.error {
            self.push_error(LoadError::document(source, e.document, e.message));
        }
    }

    fn document(&mut self, value: Value, source: &str, document: usize) {
        let origin = Origin {
            source: source.to_string(),
            document,
            item: None,
        };
        let Value::Object(map) = value else {
            if value.is_null() {
                return;
            }
            self.push_error(LoadError::document(
                source,
                document,
                format!(
                    "expected a resource (a mapping with apiVersion, kind, metadata and spec), found {}",
                    json_type(&value)
                ),
            ));
            return;
        };
        let (api, kind) = match type_meta(&map, &origin) {
            Ok(t) => t,
            Err(e) => {
                self.push_error(e);
                return;
            }
        };
        if let Some(item_kind) = list_kind(&api, &kind) {
            self.list(map, item_kind, &origin);
        } else {
            self.resource(map, &api, &kind, origin);
        }
    }

    fn list(&mut self, mut map: Map<String, Value>, item_kind: Option<Kind>, origin: &Origin) {
        let mut ok = true;
        for key in map.keys() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "items") {
                self.push_error(LoadError::at(
                    origin,
                    "",
                    format!("unknown field `{key}` in a List, expected one of `apiVersion`, `kind`, `metadata`, `items`"),
                ));
                ok = false;
            }
        }
        let items = match map.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.push_error(LoadError::at(
                    origin,
                    "items",
                    format!(
                        "invalid type: {}, expected a sequence of resources",
                        json_type(&other)
                    ),
                ));
                return;
            }
        };
        if !ok {
            return;
        }
        for (i, item) in items.into_iter().enumerate() {
            let item_origin = Origin {
                item: Some(i),
                ..origin.clone()
            };
            let Value::Object(mut item) = item else {
                self.push_error(LoadError::at(
                    &item_origin,
                    "",
                    format!(
                        "expected a resource (a mapping with apiVersion, kind, metadata and spec), found {}",
                        json_type(&item)
                    ),
                ));
                continue;
            };
            if let Some(k) = item_kind {
                // Typed lists may leave the type of their items implicit.
                item.entry("apiVersion")
                    .or_insert_with(|| Value::String(k.api_version().to_string()));
                item.entry("kind")
                    .or_insert_with(|| Value::String(k.as_str().to_string()));
            }
            let (api, kind) = match type_meta(&item, &item_origin) {
                Ok(t) => t,
                Err(e) => {
                    self.push_error(e);
                    continue;
                }
            };
            if list_kind(&api, &kind).is_some() {
                self.push_error(LoadError::at(
                    &item_origin,
                    "kind",
                    format!("a {kind} cannot be an item of a List"),
                ));
                continue;
            }
            if let Some(k) = item_kind
                && Kind::from_wire(&api, &kind) != Some(k)
            {
                self.push_error(LoadError::at(
                    &item_origin,
                    "kind",
                    format!(
                        "item of kind {kind:?} (apiVersion {api:?}) in a list of {}",
                        k.as_str()
                    ),
                ));
                continue;
            }
            self.resource(item, &api, &kind, item_origin);
        }
    }

    fn resource(&mut self, map: Map<String, Value>, api: &str, kind: &str, origin: Origin) {
        let mut r = ResourceItem::new(origin);
        self.decode_resource(&mut r, map, api, kind);
        self.items.push(Item::Resource(r));
    }

    fn decode_resource(
        &mut self,
        r: &mut ResourceItem,
        map: Map<String, Value>,
        api: &str,
        kind: &str,
    ) {
        let Some(k) = Kind::from_wire(api, kind) else {
            let e = unknown_kind(api, kind, &r.origin);
            self.resource_error(r, e);
            return;
        };
        let mut decoded = decode_every_problem(k, Value::Object(map));
        let mut resource = match decoded.resource.take() {
            Some(res) => res,
            None => {
                for (path, reason) in std::mem::take(&mut decoded.problems) {
                    let e = LoadError::at(&r.origin, &path, reason);
                    self.resource_error(r, e);
                }
                return;
            }
        };
        r.namespace_defaulted = self.process
            && k.is_namespaced()
            && resource
                .metadata()
                .namespace
                .as_deref()
                .is_none_or(str::is_empty);
        let mut invalid = !decoded.problems.is_empty();
        for (path, reason) in &decoded.problems {
            let e = LoadError::at(&r.origin, path, reason.clone());
            self.resource_error(r, e);
        }
        if self.process {
            defaults::apply(&mut resource);
            for p in validate::validate(&resource) {
                // A value dropped to get past a decode error may make its mapping or
                // the containers above it look wrong: only problems elsewhere are
                // reported.
                let field = decoded.original_path(&p.field);
                if decoded
                    .damaged
                    .iter()
                    .any(|d| under(&field, d) || under(d, &field))
                {
                    continue;
                }
                invalid = true;
                let e = LoadError::at(&r.origin, &field, p.reason);
                self.resource_error(r, e);
            }
        }
        if !invalid {
            r.kept = Some(if self.outline {
                let (key, tier) = Outline::key_and_tier(resource);
                Kept::Outline(key, tier)
            } else {
                Kept::Whole(resource)
            });
        }
    }
}
/// The outcome of decoding one resource while collecting every decode problem.
struct Decoded {
    /// The resource, decoded with every offending value dropped (`None` when that was
    /// not possible, or nothing was dropped and it still failed).
    resource: Option<Resource>,
    /// Every problem found: field path (in the input's numbering) and reason.
    problems: Vec<(String, String)>,
    /// Sequence items dropped, in order: the sequence's path at the time and the index.
    dropped_items: Vec<(String, usize)>,
    /// Paths (input numbering) of the mappings that lost a field, and of the dropped
    /// items.
    damaged: Vec<String>,
}

impl Decoded {
    /// `path`, written against the decoded value (items dropped), in the input's
    /// numbering.
    fn original_path(&self, path: &str) -> String {
        let mut path = path.to_string();
        for (seq, index) in self.dropped_items.iter().rev() {
            let prefix = format!("{seq}[");
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let Some(close) = rest.find(']') else {
                continue;
            };
            if let Ok(j) = rest[..close].parse::<usize>()
                && j >= *index
            {
                path = format!("{prefix}{}{}", j + 1, &rest[close..]);
            }
        }
        path
    }
}

/// Whether field path `path` is `base` or lies inside it.
fn under(path: &str, base: &str) -> bool {
    base.is_empty()
        || path == base
        || path
            .strip_prefix(base)
            .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
}

/// Most decode problems collected from one resource.
const MAX_DECODE_PROBLEMS: usize = MAX_REPORTED_ERRORS;

/// Decodes `value` as a `kind`, and on each error drops the offending value (a mapping
/// field or a sequence item) and tries again, so that every decode problem of the
/// document is found, not only the first. Stops when the error cannot be located, when
/// the drop would remove a required field (the "missing field" that follows is not the
/// user's mistake), or after [`MAX_DECODE_PROBLEMS`].
fn decode_every_problem(kind: Kind, mut value: Value) -> Decoded {
    let mut d = Decoded {
        resource: None,
        problems: Vec::new(),
        dropped_items: Vec::new(),
        damaged: Vec::new(),
    };
    let mut removed_keys: Vec<(String, String)> = Vec::new();
    loop {
        let (segs, path, reason) = match decode_resource(kind, &value) {
            Ok(r) => {
                d.resource = Some(r);
                return d;
            }
            Err(e) => e,
        };
        if let Some(field) = reason
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            && removed_keys
                .iter()
                .any(|(parent, key)| *parent == path && key == field)
        {
            // Caused by a field already reported and dropped.
            return d;
        }
        d.problems.push((d.original_path(&path), reason));
        let Some(segs) = segs else {
            return d;
        };
        if d.problems.len() >= MAX_DECODE_PROBLEMS || segs.is_empty() {
            return d;
        }
        let (last, parent) = segs.split_last().expect("not empty");
        let parent_path = path_string(parent);
        let mut node = &mut value;
        for seg in parent {
            let next = match (seg, node) {
                (PathSeg::Key(k), Value::Object(m)) => m.get_mut(k),
                (PathSeg::Index(i), Value::Array(a)) => a.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return d,
            }
        }
        let original_parent = d.original_path(&parent_path);
        match (last, node) {
            (PathSeg::Key(k), Value::Object(m)) if m.contains_key(k) => {
                m.remove(k);
                // Inside a rule or a sub-mapping, the neighbours of a dropped field
                // may depend on it (ports on protocol); a top-level section (`spec`,
                // `metadata`) is only damaged at the dropped field and above.
                let nested = parent.len() > 1;
                d.damaged.push(if nested {
                    original_parent
                } else {
                    d.original_path(&path)
                });
                removed_keys.push((parent_path, k.clone()));
            }
            (PathSeg::Index(i), Value::Array(a)) if *i < a.len() => {
                a.remove(*i);
                let original = d.original_path(&path);
                d.dropped_items.push((parent_path, *i));
                d.damaged.push(original);
            }
            _ => return d,
        }
    }
}

/// Why `path` cannot be read, `e` being the error of following it.
fn unreadable_reason(path: &Path, e: &std::io::Error) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(path)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default();
            format!("cannot read: a symlink{target} that cannot be followed ({e})")
        }
        _ => format!("cannot read: {e}"),
    }
}

/// Why a path that is neither a regular file nor a directory is not read.
fn not_a_file_reason(m: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let what = {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_char_device() {
            "a character device"
        } else {
            "not a regular file"
        }
    };
    #[cfg(not(unix))]
    let what = {
        let _ = m;
        "not a regular file"
    };
    format!(
        "cannot read: {what}; only regular files (or symlinks to them), directories and - (stdin) are read"
    )
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let name = dir.display().to_string();
    if depth > MAX_DIR_DEPTH {
        return Err(LoadError::file(
            &name,
            LoadErrorKind::Invalid,
            format!("directories nested deeper than {MAX_DIR_DEPTH} levels"),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        LoadError::file(
            &name,
            LoadErrorKind::Io,
            format!("cannot read directory: {e}"),
        )
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            LoadError::file(
                &name,
                LoadErrorKind::Io,
                format!("cannot read directory: {e}"),
            )
        })?;
        let path = entry.path();
        let policy_name = path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        // Follows symlinks; the depth cap stops cycles.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            // Something that is not a policy file and cannot be followed (a dangling
            // symlink named README) is not looked at.
            Err(_) if !policy_name => continue,
            Err(e) => {
                return Err(LoadError::file(
                    &path.display().to_string(),
                    LoadErrorKind::Io,
                    unreadable_reason(&path, &e),
                ));
            }
        };
        if meta.is_dir() {
            collect_files(&path, depth + 1, out)?;
        } else if policy_name {
            // A FIFO, socket or device would block or read forever: only regular files.
            if !meta.is_file() {
                return Err(LoadError::file(
                    &path.display().to_string(),
                    LoadErrorKind::Io,
                    not_a_file_reason(&meta),
                ));
            }
            out.push(path);
            if out.len() > MAX_FILES {
                return Err(LoadError::file(
                    &name,
                    LoadErrorKind::Invalid,
                    format!("more than {MAX_FILES} policy files"),
                ));
            }
        }
    }
    Ok(())
}

fn check_duplicates<'a, K: Hash + Eq + fmt::Display>(
    resources: impl Iterator<Item = (K, &'a Origin)>,
    errors: &mut Vec<LoadError>,
) {
    let mut seen: HashMap<K, &Origin> = HashMap::new();
    for (key, origin) in resources {
        if let Some(first) = seen.get(&key) {
            errors.push(LoadError::at(
                origin,
                "metadata.name",
                format!("{key} is defined twice (first at {first})"),
            ));
        } else {
            seen.insert(key, origin);
        }
    }
}

// ---------------------------------------------------------------------------------
// Dispatch

/// Reads `apiVersion` and `kind` of a resource mapping.
fn type_meta(map: &Map<String, Value>, origin: &Origin) -> Result<(String, String), LoadError> {
    let get = |field: &str| match map.get(field) {
        None | Some(Value::Null) => Err(LoadError::at(
            origin,
            field,
            format!("missing field `{field}`: every resource needs apiVersion and kind"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(LoadError::at(
            origin,
            field,
            format!("invalid type: {}, expected a string", json_type(other)),
        )),
    };
    Ok((get("apiVersion")?, get("kind")?))
}

/// If `kind` is a list: `Some(None)` for a generic `List`, `Some(Some(k))` for a typed
/// `<Kind>List`.
fn list_kind(api: &str, kind: &str) -> Option<Option<Kind>> {
    if kind == "List" && (api == K8S_CORE_API || api == CALICO_API) {
        return Some(None);
    }
    let base = kind.strip_suffix("List")?;
    Kind::from_wire(api, base).map(Some)
}

fn unknown_kind(api: &str, kind: &str, origin: &Origin) -> LoadError {
    let accepted = Kind::ALL
        .iter()
        .map(|k| format!("{} {}", k.api_version(), k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let known_kind = Kind::ALL
        .iter()
        .filter(|k| k.as_str() == kind)
        .map(|k| k.api_version())
        .collect::<Vec<_>>();
    if known_kind.is_empty() {
        LoadError::at(
            origin,
            "kind",
            format!("unknown kind {kind:?} (apiVersion {api:?}); accepted: {accepted}, and List"),
        )
    } else {
        LoadError::at(
            origin,
            "apiVersion",
            format!(
                "apiVersion {api:?} is not accepted for kind {kind}; expected {}",
                known_kind.join(" or ")
            ),
        )
    }
}

/// The wire form of every resource: type metadata, metadata, spec, and an ignored status.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire<S> {
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// Where a decode error is: the path of map keys and sequence indices from the top of
/// the resource, or `None` for a place that cannot be named (an enum or untagged value).
type DecodePath = Option<Vec<PathSeg>>;

/// One step of a [`DecodePath`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn path_string(segs: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn decode_object<S: DeserializeOwned + Default>(
    value: &Value,
) -> Result<Object<S>, (DecodePath, String, String)> {
    // Most documents decode: without tracking the path first (the tracked decode is
    // the same decode, wrapped), and again with it only to locate an error.
    if let Ok(wire) = Wire::<S>::deserialize(value) {
        return Ok(Object {
            metadata: wire.metadata.unwrap_or_default(),
            spec: wire.spec.unwrap_or_default(),
        });
    }
    let wire: Wire<S> = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let segs = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>();
        (segs, path, e.into_inner().to_string())
    })?;
    Ok(Object {
        metadata: wire.metadata.unwrap_or_default(),
        spec: wire.spec.unwrap_or_default(),
    })
}

fn decode_resource(kind: Kind, value: &Value) -> Result<Resource, (DecodePath, String, String)> {
    Ok(match kind {
        Kind::NetworkPolicy => Resource::NetworkPolicy(decode_object(value)?),
        Kind::GlobalNetworkPolicy => Resource::GlobalNetworkPolicy(decode_object(value)?),
        Kind::StagedNetworkPolicy => Resource::StagedNetworkPolicy(decode_object(value)?),
        Kind::StagedGlobalNetworkPolicy => {
            Resource::StagedGlobalNetworkPolicy(decode_object(value)?)
        }
        Kind::StagedKubernetesNetworkPolicy => {
            Resource::StagedKubernetesNetworkPolicy(decode_object(value)?)
        }
        Kind::KubernetesNetworkPolicy => Resource::KubernetesNetworkPolicy(decode_object(value)?),
        Kind::Tier => Resource::Tier(decode_object(value)?),
        Kind::NetworkSet => Resource::NetworkSet(decode_object(value)?),
        Kind::GlobalNetworkSet => Resource::GlobalNetworkSet(decode_object(value)?),
        Kind::HostEndpoint => Resource::HostEndpoint(decode_object(value)?),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(decode_object(value)?),
        Kind::Profile => Resource::Profile(decode_object(value)?),
        Kind::Namespace => Resource::Namespace(decode_object(value)?),
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn json_error_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is already in our prefix.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

// ---------------------------------------------------------------------------------
// YAML

fn saphyr_options() -> serde_saphyr::Options {
    let mut opts = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DOCUMENT_DEPTH,
            max_nodes: MAX_DOCUMENT_NODES,
            max_events: MAX_DOCUMENT_EVENTS,
            max_documents: 2,
        },
        with_snippet: false,
        // YAML 1.2 core schema: `n`, `no`, `on` are strings, not booleans (a namespace
        // named `no` must not turn into `false`).
        strict_booleans: true,
        // `.nan`, `.inf` and `1e400` become strings, so the field that cannot take
        // them is named in the error (`spec.order: invalid order ".inf": ...`).
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
    };
    // Alias bombs: a policy document never needs more than this many replayed events.
    opts.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    opts
}

/// YAML nesting allowed inside one document (saphyr's `max_depth`).
const MAX_DOCUMENT_DEPTH: usize = 64;
/// Alias expansion allowed per document (replayed events).
const MAX_ALIAS_EVENTS: usize = 100_000;
/// Nodes allowed per document.
const MAX_DOCUMENT_NODES: usize = 1_000_000;
/// Parser events allowed per document (a node each, a collection's end, the stream's
/// and document's start and end).
const MAX_DOCUMENT_EVENTS: usize = 1_000_000;

/// The message for a YAML limit that a document exceeded: what, the limit, and what to
/// do (saphyr's own text is `budget breached: Depth { depth: 65 }`).
fn budget_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    let mut e = e;
    #[allow(deprecated)] // the variants' deprecated `msg` fields are not read
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            serde_saphyr::Error::Budget { breach, .. } => {
                return Some(match breach {
                    BudgetBreach::Depth { depth } => format!(
                        "nested {depth} levels deep, more than the limit of {MAX_DOCUMENT_DEPTH} mappings/sequences inside one document (a policy needs about 10): check for runaway brackets or indentation"
                    ),
                    BudgetBreach::Nodes { nodes } => format!(
                        "more than {MAX_DOCUMENT_NODES} YAML nodes in one document ({nodes} seen): split the document"
                    ),
                    other => format!(
                        "a YAML size limit was exceeded ({other:?}; aliases may expand to at most {MAX_ALIAS_EVENTS} events per document): simplify or split the document"
                    ),
                });
            }
            _ => return None,
        }
    }
}

fn saphyr_error_message(e: &serde_saphyr::Error, first_line: usize) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("").trim().to_string();
    let message = budget_message(e).unwrap_or(first);
    match e.location() {
        Some(loc) if loc.line() > 0 => {
            let line = loc.line() as usize + first_line - 1;
            // saphyr puts its own "line L column C" into the message; keep ours only.
            let message = strip_saphyr_location(&message);
            format!(
                "YAML error at line {line} column {}: {message}",
                loc.column()
            )
        }
        _ => format!("YAML error: {message}"),
    }
}

fn strip_saphyr_location(m: &str) -> &str {
    // Advice about the library's own options means nothing to a user.
    let m = m.split(", set DuplicateKeyPolicy").next().unwrap_or(m);
    if let Some(i) = m.find(" at line ") {
        return &m[..i];
    }
    if let Some(rest) = m.strip_prefix("error: line ")
        && let Some(i) = rest.find(": ")
    {
        return &rest[i + 2..];
    }
    m
}

/// A document of a stream split at bare `---` lines.
struct MarkedDocument<'a> {
    /// From its `---` line (if any) to the next one.
    text: &'a str,
    /// Whether it holds no resource: nothing but blank lines and comments, or only
    /// `~` / `null`.
    null: bool,
}

/// Splits a YAML stream at its `---` lines when it is of the common shape: no
/// directive (`%`) or document end (`...`) line, nothing after a `---` on its line, and
/// at most [`MAX_DOCUMENTS`] documents; `None` otherwise. A `---` at the start of a
/// line always starts a document in YAML (it cannot be content, even in a block or
/// quoted scalar), so the documents and their numbers are those of the event parser;
/// text before the first `---` is a document only when it holds more than blank lines
/// and comments.
fn split_marked_documents(text: &str) -> Option<Vec<MarkedDocument<'_>>> {
    fn content(line: &str) -> &str {
        let t = line.trim_matches([' ', '\t', '\r', '\n']);
        if t.starts_with('#') { "" } else { t }
    }
    fn document(text: &str, explicit: bool) -> Option<MarkedDocument<'_>> {
        let mut lines = text.split_inclusive('\n');
        if explicit {
            lines.next();
        }
        let mut contents = lines.map(content).filter(|c| !c.is_empty());
        let null = match (contents.next(), contents.next()) {
            // Blank lines and comments before the first `---` are no document.
            (None, _) if !explicit => return None,
            (None, _) => true,
            (Some(c), None) => matches!(c, "~" | "null" | "Null" | "NULL"),
            _ => false,
        };
        Some(MarkedDocument { text, null })
    }
    let mut documents = Vec::new();
    let mut start = 0usize;
    let mut explicit = false;
    let mut pos = 0usize;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("---") {
            if !rest.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
                return None;
            }
            documents.extend(document(&text[start..pos], explicit));
            if documents.len() >= MAX_DOCUMENTS {
                return None;
            }
            start = pos;
            explicit = true;
        } else if line.starts_with("...") || line.starts_with('%') {
            return None;
        }
        pos += line.len();
    }
    documents.extend(document(&text[start..], explicit));
    Some(documents)
}

struct DocumentSlice<'a> {
    number: usize,
    text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    first_line: usize,
    /// Whether the document holds no resource (empty, `~`, `null`).
    null: bool,
}

struct SyntaxError {
    document: usize,
    message: String,
}

struct Split<'a> {
    documents: Vec<DocumentSlice<'a>>,
    error: Option<SyntaxError>,
}

/// Splits a YAML stream into its documents with the event parser, so each document is
/// decoded (and fails) on its own and keeps its number even when empty. A syntax error
/// ends the split: the documents before it are still returned.
fn split_yaml_documents(text: &str) -> Split<'_> {
    let mut opts = granit_parser::Options::default();
    opts.emit_comments = false;
    opts.block_nesting_limit = 128;
    opts.flow_nesting_limit = 128;
    let mut parser = granit_parser::Parser::new_from_str_with_options(text, opts);
    let mut documents = Vec::new();
    let mut number = 0usize;
    let mut cut = 0usize;
    let mut line = 1usize;
    let mut depth = 0usize;
    let mut root_null = true;
    let mut in_document = false;
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let m = e.marker();
                let document = if in_document { number } else { number + 1 };
                return Split {
                    documents,
                    error: Some(SyntaxError {
                        document,
                        message: format!(
                            "YAML syntax error at line {} column {}: {}",
                            m.line(),
                            m.col() + 1,
                            e.info()
                        ),
                    }),
                };
            }
        };
        match event {
            Event::DocumentStart(..) => {
                number += 1;
                if number > MAX_DOCUMENTS {
                    return Split {
                        documents,
                        error: Some(SyntaxError {
                            document: number,
                            message: format!("more than {MAX_DOCUMENTS} documents in one file"),
                        }),
                    };
                }
                in_document = true;
                depth = 0;
                root_null = true;
            }
            Event::DocumentEnd => {
                in_document = false;
                let end = span
                    .byte_range()
                    .map_or(text.len(), |r| r.end)
                    .clamp(cut, text.len());
                let slice = text.get(cut..end).unwrap_or("");
                documents.push(DocumentSlice {
                    number,
                    text: slice,
                    first_line: line,
                    null: root_null,
                });
                line += slice.matches('\n').count();
                cut = end;
            }
            Event::Scalar(ref value, style, anchor, ref tag) if depth == 0 => {
                root_null = style == ScalarStyle::Plain
                    && anchor == 0
                    && tag.is_none()
                    && matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL");
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if depth == 0 {
                    root_null = false;
                }
                depth += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) if depth == 0 => root_null = false,
            _ => {}
        }
    }
    Split {
        documents,
        error: None,
    }
}

mod simple_yaml;
#[cfg(test)]
mod tests;
