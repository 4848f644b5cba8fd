//! `--state-dir`: the applied policy store kept on disk as numbered generations, so a
//! daemon restarts with the policy set it last acknowledged.
//!
//! Layout of a state directory:
//! - `gen-<N>.json`: generation N. One header line (JSON: format, version, N, the
//!   number of resources, the body's length and SHA-256, the keys that came from
//!   `-f`), then the body: a `v1` `List`
//!   of every applied resource in its wire form, one per line: exactly what `tiergate
//!   check -f` and `apply -f` read (`tail -n +2 gen-<N>.json`). The newest two
//!   generations are kept.
//! - `.gen-<N>.json.tmp`: a commit in progress; one found at start is the remains of an
//!   interrupted commit and is removed.
//! - `lock`: held with an exclusive `flock` by the daemon that owns the directory (its
//!   pid is written in it, for people); a second daemon on the same directory fails.
//! - `corrupt/`: generations `tiergate state repair` moved aside.
//!
//! A commit writes the temporary file, fsyncs it, renames it to `gen-<N+1>.json` and
//! fsyncs the directory: a crash at any point leaves the old generation or the new one
//! as the newest complete file, never a mix and never none. Only then are generations
//! older than the previous one removed.
//!
//! [`StateDir::open`] restores the newest generation. If that file is unusable (bad
//! header, wrong checksum, a body that no longer loads) the open fails with an error
//! naming the file and the ways out; it never falls back silently, because the newest
//! generation is the one the daemon acknowledged. [`repair`] is the documented way
//! out: it moves unusable newest generations aside until a valid one is newest.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::model::{Format, Resource};
use crate::persist::Persist;
use crate::policy;
use crate::store::Store;

/// The `format` of a generation's header.
pub const FORMAT: &str = "tiergate-state";
/// The header `version` this tiergate writes and reads.
pub const VERSION: u32 = 1;
/// The lock file's name inside a state directory.
pub const LOCK_FILE: &str = "lock";
/// Where [`repair`] moves unusable generations, inside the state directory.
pub const ASIDE_DIR: &str = "corrupt";

/// The header line of a generation file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// The generation number (the `N` of `gen-<N>.json`).
    pub generation: u64,
    /// Resources in the body.
    pub resources: usize,
    /// Length of the body in bytes.
    pub body_bytes: u64,
    /// SHA-256 of the body, lowercase hex.
    pub body_sha256: String,
    /// When it was written (seconds since the Unix epoch).
    pub written_unix_s: u64,
    /// Keys of the resources read from the daemon's `-f` sources (at its start or its
    /// last SIGHUP reload): a reload deletes those its files no longer hold. Absent
    /// when empty (and in files written before it existed: nothing counts as from
    /// `-f` then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::model::ResourceKey>,
}

/// Why a state directory cannot be used.
#[derive(Debug, Error)]
pub enum StateError {
    /// Another process holds the directory's lock.
    #[error(
        "state directory {} is in use by another tiergate{}: stop it, or give this one another --state-dir",
        dir.display(),
        holder.map_or_else(String::new, |p| format!(" (pid {p})"))
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid written in the lock file, if readable.
        holder: Option<u32>,
    },
    /// A file or directory operation failed.
    #[error("state directory: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The store holds more resources than a generation can hold (the loader's limit
    /// for one load): committing it would leave a generation that cannot be restored.
    #[error(
        "the policy store holds {resources} resources; a state generation holds at most {max} (nothing was written)"
    )]
    TooLarge {
        /// Resources in the store.
        resources: usize,
        /// The limit.
        max: usize,
    },
    /// The newest generation is unusable: nothing was restored.
    #[error("{}", corrupt_message(path, reason, older.as_deref()))]
    Corrupt {
        /// The unusable file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The newest older generation that is valid, if any.
        older: Option<PathBuf>,
    },
}

impl StateError {
    /// The exit code a command returns for it: 1 for an unusable generation, 2 for a
    /// directory that cannot be used at all (in use, unreadable).
    pub fn exit_code(&self) -> u8 {
        match self {
            StateError::Corrupt { .. } => 1,
            _ => 2,
        }
    }
}

fn corrupt_message(path: &Path, reason: &str, older: Option<&Path>) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fallback = match older {
        Some(o) => format!("restores the previous generation {}", o.display()),
        None => "leaves no generation (there is no older valid one; it needs --allow-empty, and the next start seeds from -f)".to_string(),
    };
    format!(
        "state file {} is unusable: {reason}. Nothing was restored. Ways out: `tiergate state repair {}` moves it to {}/ and {fallback}; or start with another --state-dir",
        path.display(),
        dir.display(),
        dir.join(ASIDE_DIR).display()
    )
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of generation `n`.
pub fn file_name(n: u64) -> String {
    format!("gen-{n}.json")
}

fn temp_name(n: u64) -> String {
    format!(".gen-{n}.json.tmp")
}

fn parse_gen(name: &str) -> Option<u64> {
    let n = name.strip_prefix("gen-")?.strip_suffix(".json")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

fn is_temp(name: &str) -> bool {
    name.starts_with(".gen-") && name.ends_with(".json.tmp")
}

/// What a directory holds: generation numbers (descending) and leftover temp files.
struct Listing {
    gens: Vec<u64>,
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, StateError> {
    let mut gens = Vec::new();
    let mut temps = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = parse_gen(name) {
            gens.push(n);
        } else if is_temp(name) {
            temps.push(entry.path());
        }
    }
    gens.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Listing { gens, temps })
}

/// The bytes of generation `n` holding `store`.
pub fn encode(store: &Store, n: u64) -> Vec<u8> {
    let items: Vec<&Resource> = store
        .entries()
        .filter(|(_, s)| s.origin.is_some())
        .map(|(_, s)| &s.resource)
        .collect();
    // A `v1` List with one resource per line: compact, and still greppable.
    let mut body = b"{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[".to_vec();
    for (i, r) in items.iter().enumerate() {
        body.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        // Plain data (strings, numbers, maps with string keys): cannot fail.
        let _ = serde_json::to_writer(&mut body, r);
    }
    body.extend_from_slice(b"\n]}\n");
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        generation: n,
        resources: items.len(),
        body_bytes: body.len() as u64,
        body_sha256: hex(&Sha256::digest(&body)),
        written_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        files: store.file_keys().iter().cloned().collect(),
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A valid generation read from disk.
#[derive(Debug)]
pub struct Generation {
    /// Its header.
    pub header: Header,
    /// The store it holds.
    pub store: Store,
}

/// Reads and checks generation `n` at `path`: header, length, checksum, and that the
/// body loads into a store the evaluator accepts. The error says what is wrong.
pub fn read_generation(path: &Path, n: u64) -> Result<Generation, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    decode(&bytes, n, &path.display().to_string())
}

fn decode(bytes: &[u8], n: u64, source: &str) -> Result<Generation, String> {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(if bytes.is_empty() {
            "the file is empty".to_string()
        } else {
            "no header line (the file is truncated or not a tiergate state file)".to_string()
        });
    };
    let header: Header = serde_json::from_slice(&bytes[..nl])
        .map_err(|e| format!("the header line is not a tiergate state header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "the header's format is {:?}, expected {FORMAT:?}",
            header.format
        ));
    }
    if header.version != VERSION {
        return Err(format!(
            "format version {} (this tiergate reads version {VERSION}; was it written by another release?)",
            header.version
        ));
    }
    if header.generation != n {
        return Err(format!(
            "the header says generation {}, the file name says {n}",
            header.generation
        ));
    }
    let body = &bytes[nl + 1..];
    if body.len() as u64 != header.body_bytes {
        return Err(format!(
            "the body is {} bytes, the header says {} (truncated or partly written)",
            body.len(),
            header.body_bytes
        ));
    }
    let sum = hex(&Sha256::digest(body));
    if sum != header.body_sha256 {
        return Err(format!(
            "the body's SHA-256 is {sum}, the header says {} (the file was changed or damaged)",
            header.body_sha256
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let read = policy::read_text(text, source, Format::Json)
        .map_err(|e| format!("the body does not load: {}", e.lines().join("; ")))?;
    if read.items.len() != header.resources {
        return Err(format!(
            "the body holds {} resources, the header says {}",
            read.items.len(),
            header.resources
        ));
    }
    let mut stored = policy::store(read)
        .map_err(|e| format!("the body does not apply: {}", e.lines().join("; ")))?;
    stored
        .store
        .set_file_keys(header.files.iter().cloned().collect());
    policy::cluster(&stored.store)
        .map_err(|e| format!("the evaluator refuses the body: {}", e.lines().join("; ")))?;
    Ok(Generation {
        header,
        store: stored.store,
    })
}

/// A step of a commit (named for the crash and failure tests' seam).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    CreateTemp,
    /// Half of the bytes are written.
    Write,
    Fsync,
    Rename,
    FsyncDir,
    Prune,
}

/// What the test seam does at a step.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inject {
    /// Stop dead before the step (after a half write for [`Step::Write`]), cleaning up
    /// nothing: the directory is left as a crash there would leave it.
    Crash(Step),
    /// The step fails with an I/O error; the commit cleans up as it would.
    Fail(Step),
}

/// An open state directory: holds its lock until dropped.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
    newest: u64,
    /// Most resources a commit writes ([`crate::model::load::MAX_RESOURCES`], what one
    /// load, and so a restore, reads).
    max_resources: usize,
    #[cfg(test)]
    pub(crate) inject: Option<Inject>,
}

impl StateDir {
    /// Opens (creating it, mode 0700, if missing) and locks `dir`, removes the remains
    /// of an interrupted commit, and restores the newest generation: `None` when the
    /// directory holds none. Fails if another process holds the directory, or if the
    /// newest generation is unusable ([`StateError::Corrupt`]).
    pub fn open(dir: &Path) -> Result<(StateDir, Option<Store>), StateError> {
        let lock = lock(dir)?;
        let listing = list(dir)?;
        for t in &listing.temps {
            fs::remove_file(t).map_err(io_err("remove the interrupted commit", t))?;
        }
        let mut sd = StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            newest: 0,
            max_resources: crate::model::load::MAX_RESOURCES,
            #[cfg(test)]
            inject: None,
        };
        let Some(&n) = listing.gens.first() else {
            return Ok((sd, None));
        };
        let path = dir.join(file_name(n));
        match read_generation(&path, n) {
            Ok(g) => {
                sd.newest = n;
                Ok((sd, Some(g.store)))
            }
            Err(reason) => Err(StateError::Corrupt {
                older: newest_valid(dir, &listing.gens[1..]).map(|(p, _)| p),
                path,
                reason,
            }),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest generation on disk (0: none yet).
    pub fn generation(&self) -> u64 {
        self.newest
    }

    /// The test seam: an injected crash or failure at `step`.
    #[cfg(test)]
    fn at(&self, step: Step) -> io::Result<()> {
        match self.inject {
            Some(Inject::Crash(s)) if s == step => Err(io::Error::other("injected crash")),
            Some(Inject::Fail(s)) if s == step => Err(io::Error::other("injected failure")),
            _ => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline]
    fn at(&self, _step: Step) -> io::Result<()> {
        Ok(())
    }

    /// Whether an injected crash is under way (then nothing is cleaned up, as after a
    /// real crash).
    fn crashing(&self) -> bool {
        #[cfg(test)]
        {
            matches!(self.inject, Some(Inject::Crash(_)))
        }
        #[cfg(not(test))]
        {
            false
        }
    }

    /// Writes `store` as the next generation and returns its number. On error the
    /// newest generation on disk is still the previous one (the new file is removed if
    /// it got that far).
    pub fn commit_store(&mut self, store: &Store) -> Result<u64, StateError> {
        let n = self.newest + 1;
        let resources = store.entries().filter(|(_, s)| s.origin.is_some()).count();
        if resources > self.max_resources {
            return Err(StateError::TooLarge {
                resources,
                max: self.max_resources,
            });
        }
        let bytes = encode(store, n);
        let tmp = self.dir.join(temp_name(n));
        let fin = self.dir.join(file_name(n));
        let write = || -> Result<(), (&'static str, io::Error)> {
            self.at(Step::CreateTemp).map_err(|e| ("create", e))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| ("create", e))?;
            if let Err(e) = self.at(Step::Write) {
                let _ = f.write_all(&bytes[..bytes.len() / 2]);
                return Err(("write", e));
            }
            f.write_all(&bytes).map_err(|e| ("write", e))?;
            self.at(Step::Fsync).map_err(|e| ("fsync", e))?;
            f.sync_all().map_err(|e| ("fsync", e))
        };
        if let Err((op, e)) = write() {
            if !self.crashing() {
                let _ = fs::remove_file(&tmp);
            }
            return Err(StateError::Io {
                op,
                path: tmp,
                source: e,
            });
        }
        if let Err(e) = self.at(Step::Rename).and_then(|()| fs::rename(&tmp, &fin)) {
            if !self.crashing() {
                let _ = fs::remove_file(&tmp);
            }
            return Err(StateError::Io {
                op: "rename into place",
                path: tmp,
                source: e,
            });
        }
        if let Err(e) = self.at(Step::FsyncDir).and_then(|()| sync_dir(&self.dir)) {
            if self.crashing() {
                return Err(io_err("fsync", &self.dir)(e));
            }
            // The new file may or may not be durable: take it back so that what is on
            // disk matches the error the caller reports.
            let undo = fs::remove_file(&fin).and_then(|()| sync_dir(&self.dir));
            return Err(StateError::Io {
                op: match undo {
                    Ok(()) => "fsync (the new generation was removed again)",
                    Err(_) => "fsync (and could not remove the new generation again)",
                },
                path: self.dir.clone(),
                source: e,
            });
        }
        self.newest = n;
        // Committed. Removing old generations is housekeeping: a failure here leaves
        // extra files that the next commit removes.
        if self.at(Step::Prune).is_err() {
            return Ok(n);
        }
        if let Ok(listing) = list(&self.dir) {
            for old in listing.gens.iter().filter(|&&g| g + 1 < n) {
                let _ = fs::remove_file(self.dir.join(file_name(*old)));
            }
            let _ = sync_dir(&self.dir);
        }
        Ok(n)
    }
}

impl Persist for StateDir {
    fn commit(&mut self, store: &Store) -> io::Result<()> {
        self.commit_store(store)
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` if needed and takes its lock.
fn lock(dir: &Path) -> Result<File, StateError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StateError::Io {
                op: "use",
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("set the mode of", dir))?;
            // The new directory's own entry must survive a crash too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(io_err("fsync", parent))?;
            }
        }
        Err(e) => return Err(io_err("open", dir)(e)),
    }
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                holder: lock_holder(dir),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    // The pid is for people (and `state check`); the flock is what excludes.
    let _ = f.set_len(0).and_then(|()| {
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(0))?;
        writeln!(f, "{}", std::process::id())
    });
    Ok(f)
}

/// The pid written in `dir`'s lock file.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(LOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The newest valid generation among `gens` (descending).
fn newest_valid(dir: &Path, gens: &[u64]) -> Option<(PathBuf, Generation)> {
    gens.iter().find_map(|&n| {
        let p = dir.join(file_name(n));
        read_generation(&p, n).ok().map(|g| (p, g))
    })
}

/// One generation file as [`check`] found it.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub file: PathBuf,
    /// Its generation number.
    pub generation: u64,
    /// `None` if valid, else what is wrong.
    pub problem: Option<String>,
    /// Resources it holds (valid files).
    pub resources: Option<usize>,
    /// When it was written (valid files).
    pub written_unix_s: Option<u64>,
}

/// What a state directory holds.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The directory.
    pub dir: PathBuf,
    /// Every generation, newest first.
    pub generations: Vec<FileReport>,
    /// Remains of an interrupted commit (removed by the next start or repair).
    pub interrupted_commits: Vec<PathBuf>,
    /// The pid written in the lock file (the last daemon that opened the directory).
    pub lock_pid: Option<u32>,
    /// The generation the next start restores (`None`: none, or the newest is unusable).
    pub restores: Option<u64>,
}

impl CheckReport {
    /// Whether the next start can use the directory (it restores the newest
    /// generation, or there is none).
    pub fn ok(&self) -> bool {
        self.generations.first().is_none_or(|g| g.problem.is_none())
    }
}

/// Reads every generation in `dir` without taking its lock (a daemon may run).
pub fn check(dir: &Path) -> Result<CheckReport, StateError> {
    if !dir.is_dir() {
        return Err(StateError::Io {
            op: "read",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let listing = list(dir)?;
    let generations: Vec<FileReport> = listing
        .gens
        .iter()
        .map(|&n| {
            let file = dir.join(file_name(n));
            match read_generation(&file, n) {
                Ok(g) => FileReport {
                    file,
                    generation: n,
                    problem: None,
                    resources: Some(g.header.resources),
                    written_unix_s: Some(g.header.written_unix_s),
                },
                Err(p) => FileReport {
                    file,
                    generation: n,
                    problem: Some(p),
                    resources: None,
                    written_unix_s: None,
                },
            }
        })
        .collect();
    let restores = generations
        .first()
        .filter(|g| g.problem.is_none())
        .map(|g| g.generation);
    Ok(CheckReport {
        dir: dir.to_path_buf(),
        generations,
        interrupted_commits: listing.temps,
        lock_pid: lock_holder(dir),
        restores,
    })
}

/// What [`repair`] did.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// The directory.
    pub dir: PathBuf,
    /// Unusable generations moved aside: (from, to, why).
    pub moved: Vec<Moved>,
    /// Remains of interrupted commits removed.
    pub removed: Vec<PathBuf>,
    /// The generation the next start restores (`None`: none; it seeds from `-f`).
    pub restores: Option<u64>,
}

/// One file [`repair`] moved aside.
#[derive(Clone, Debug, Serialize)]
pub struct Moved {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
    /// What was wrong with it.
    pub problem: String,
}

/// Why [`repair`] did nothing.
#[derive(Debug, Error)]
pub enum RepairError {
    /// The directory cannot be used (in use by a daemon, unreadable).
    #[error("{0}")]
    State(#[from] StateError),
    /// No generation is valid and `allow_empty` was not given.
    #[error(
        "no generation in {} is valid: repairing would leave no policy state (the next start would seed from -f). Nothing was changed. Give --allow-empty to move them all to {}/, or restore a generation by hand",
        dir.display(),
        dir.join(ASIDE_DIR).display()
    )]
    NothingValid {
        /// The directory.
        dir: PathBuf,
    },
}

impl RepairError {
    /// 1 when nothing valid is left to restore, else [`StateError::exit_code`].
    pub fn exit_code(&self) -> u8 {
        match self {
            RepairError::State(e) => e.exit_code(),
            RepairError::NothingValid { .. } => 1,
        }
    }
}

/// Makes `dir` usable again: takes its lock (so no daemon may run on it), removes the
/// remains of interrupted commits and moves every unusable generation newer than the
/// newest valid one to `dir/corrupt/`. When no generation is valid, it changes nothing
/// unless `allow_empty`, and then moves them all aside.
pub fn repair(dir: &Path, allow_empty: bool) -> Result<RepairReport, RepairError> {
    if !dir.is_dir() {
        return Err(StateError::Io {
            op: "read",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        }
        .into());
    }
    let _lock = lock(dir)?;
    let listing = list(dir)?;
    let mut bad = Vec::new();
    let mut restores = None;
    for &n in &listing.gens {
        let p = dir.join(file_name(n));
        match read_generation(&p, n) {
            Ok(_) => {
                restores = Some(n);
                break;
            }
            Err(problem) => bad.push((p, problem)),
        }
    }
    if restores.is_none() && !bad.is_empty() && !allow_empty {
        return Err(RepairError::NothingValid {
            dir: dir.to_path_buf(),
        });
    }
    let mut removed = Vec::new();
    for t in listing.temps {
        fs::remove_file(&t).map_err(io_err("remove", &t))?;
        removed.push(t);
    }
    let mut moved = Vec::new();
    if !bad.is_empty() {
        let aside = dir.join(ASIDE_DIR);
        fs::create_dir_all(&aside).map_err(io_err("create", &aside))?;
        for (from, problem) in bad {
            let name = from.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            let mut to = aside.join(&name);
            let mut i = 1;
            while to.exists() {
                to = aside.join(format!("{name}.{i}"));
                i += 1;
            }
            fs::rename(&from, &to).map_err(io_err("move aside", &from))?;
            moved.push(Moved { from, to, problem });
        }
        sync_dir(&aside).map_err(io_err("fsync", &aside))?;
    }
    sync_dir(dir).map_err(io_err("fsync", dir))?;
    Ok(RepairReport {
        dir: dir.to_path_buf(),
        moved,
        removed,
        restores,
    })
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state directory {}", self.dir.display())?;
        if self.generations.is_empty() {
            writeln!(
                f,
                "  no generation: the next start seeds generation 1 from -f"
            )?;
        }
        for g in &self.generations {
            match &g.problem {
                None => writeln!(
                    f,
                    "  {}: valid, {} resources",
                    g.file.display(),
                    g.resources.unwrap_or(0)
                )?,
                Some(p) => writeln!(f, "  {}: UNUSABLE: {p}", g.file.display())?,
            }
        }
        for t in &self.interrupted_commits {
            writeln!(
                f,
                "  {}: an interrupted commit (removed at the next start)",
                t.display()
            )?;
        }
        match (self.restores, self.ok()) {
            (Some(n), _) => writeln!(f, "  the next start restores generation {n}")?,
            (None, true) => {}
            (None, false) => writeln!(
                f,
                "  the next start fails: run `tiergate state repair {}`",
                self.dir.display()
            )?,
        }
        Ok(())
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state directory {}", self.dir.display())?;
        for m in &self.moved {
            writeln!(
                f,
                "  moved {} to {}: {}",
                m.from.display(),
                m.to.display(),
                m.problem
            )?;
        }
        for r in &self.removed {
            writeln!(f, "  removed the interrupted commit {}", r.display())?;
        }
        if self.moved.is_empty() && self.removed.is_empty() {
            writeln!(f, "  nothing to repair")?;
        }
        match self.restores {
            Some(n) => writeln!(f, "  the next start restores generation {n}"),
            None => writeln!(
                f,
                "  no generation left: the next start seeds generation 1 from -f"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
