//! The one output path of the `tiergate` command: every byte it writes to stdout, to
//! stderr or to an output file goes through this module.
//!
//! - [`out!`](crate::out) / [`outln!`](crate::outln) write to stdout and
//!   [`err!`](crate::err) / [`errln!`](crate::errln) to stderr. A failed write ends the
//!   command at once with exit 2 and a message naming the destination and the OS error
//!   (`tiergate: cannot write to stdout: No space left on device (os error 28)`); a
//!   failed write to stderr ends it with exit 2 silently (there is nowhere left to say
//!   so). A reader that goes away (`tiergate ... | head -1`) ends the command quietly:
//!   SIGPIPE has its default action (see `control::sys`), and a broken pipe reported as
//!   an error ends it with exit 2 and no message.
//! - [`Output`] is an output *file* (or stdout for `-`): a regular file is written
//!   through a temporary file in the same directory, renamed over the destination
//!   when everything was written and removed otherwise, so a failed run never leaves
//!   a half-written or clobbered file. Destinations that are not regular files
//!   (`/dev/null`, a FIFO, a terminal) are written in place.
//! - [`refuse_same_files`] refuses an output that is the same file (device and inode,
//!   not name) as an input or as another output.
//!
//! When stdout carries data (flow logs with `--flowlog -`, `-o json|yaml`), commands
//! print everything else (summaries, progress, notes) with `errln!`, so stdout parses.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::EXIT_USAGE;

/// Writes to stdout (like `print!`); a failed write ends the command with exit 2.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::stdout_fmt(format_args!($($arg)*)) };
}

/// Writes a line to stdout (like `println!`); a failed write ends the command with
/// exit 2.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::out::stdout_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::stdout_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stderr (like `eprint!`); a failed write ends the command with exit 2.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::cli::out::stderr_fmt(format_args!($($arg)*)) };
}

/// Writes a line to stderr (like `eprintln!`); a failed write ends the command with
/// exit 2.
#[macro_export]
macro_rules! errln {
    () => { $crate::cli::out::stderr_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::stderr_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file.
    File(PathBuf),
}

impl Dest {
    /// `-` is stdout; anything else a file.
    pub fn from_arg(path: &Path) -> Dest {
        if is_dash(path) {
            Dest::Stdout
        } else {
            Dest::File(path.to_path_buf())
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Stdout => f.write_str("stdout"),
            Dest::Stderr => f.write_str("stderr"),
            Dest::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Whether a path argument is `-` (stdin or stdout).
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A failed write: where to, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to {dest}: {source}")]
pub struct WriteError {
    /// The destination.
    pub dest: Dest,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// A write error on `dest`.
    pub fn new(dest: Dest, source: io::Error) -> WriteError {
        WriteError { dest, source }
    }
}

/// Ends the command after a failed write: the message on stderr (unless stderr is what
/// failed, or the reader of a pipe went away), exit 2.
pub fn fail(e: &WriteError) -> ! {
    std::process::exit(i32::from(report(e)))
}

/// Writes formatted text to stdout and flushes it; ends the command on failure.
pub fn stdout_fmt(args: fmt::Arguments<'_>) {
    if let Err(e) = try_stdout(args) {
        fail(&e);
    }
}

/// Writes formatted text to stderr; ends the command on failure.
pub fn stderr_fmt(args: fmt::Arguments<'_>) {
    if let Err(e) = try_stderr(args) {
        fail(&e);
    }
}

/// Writes formatted text to stdout and flushes it, returning a failure instead of
/// ending the command (for a command that must clean up first: `run`).
pub fn try_stdout(args: fmt::Arguments<'_>) -> Result<(), WriteError> {
    let mut o = io::stdout().lock();
    o.write_fmt(args)
        .and_then(|()| o.flush())
        .map_err(|e| WriteError::new(Dest::Stdout, e))
}

/// [`try_stdout`] for stderr.
pub fn try_stderr(args: fmt::Arguments<'_>) -> Result<(), WriteError> {
    let mut o = io::stderr().lock();
    o.write_fmt(args)
        .and_then(|()| o.flush())
        .map_err(|e| WriteError::new(Dest::Stderr, e))
}

/// Flushes stdout; ends the command on failure (a last check before exiting 0).
pub fn flush_stdout() {
    if let Err(e) = io::stdout().lock().flush() {
        fail(&WriteError::new(Dest::Stdout, e));
    }
}

enum Sink {
    /// Standard output (buffered here, flushed by `commit`).
    Stdout(BufWriter<io::Stdout>),
    /// A temporary file renamed over `dest` by `commit`.
    Temp {
        file: BufWriter<File>,
        temp: PathBuf,
    },
    /// A destination that is not a regular file, written in place.
    InPlace(BufWriter<Patient>),
}

/// An output file (or stdout for `-`), written completely or not at all: see the
/// module docs. Dropping it without [`Output::commit`] removes the temporary file and
/// leaves the destination as it was.
pub struct Output {
    dest: Dest,
    sink: Option<Sink>,
    /// The first write error, reported by `commit` (writers such as the pcap encoder
    /// wrap their own error types around it).
    error: Option<io::Error>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("dest", &self.dest)
            .finish_non_exhaustive()
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// `dir/.name.tiergate-PID-N.tmp`, beside `path` so that the rename stays on one
/// file system.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "output".as_ref()));
    name.push(format!(
        ".tiergate-{}-{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

impl Output {
    /// Opens `path` for writing (`-` = stdout). Nothing is visible at `path` until
    /// [`Output::commit`].
    pub fn create(path: &Path) -> Result<Output, WriteError> {
        let dest = Dest::from_arg(path);
        let sink = match &dest {
            Dest::Stdout | Dest::Stderr => Sink::Stdout(BufWriter::new(io::stdout())),
            Dest::File(p) => {
                let err = |e| WriteError::new(dest.clone(), e);
                match fs::metadata(p) {
                    Ok(m) if !m.file_type().is_file() => {
                        if m.is_dir() {
                            return Err(err(io::Error::new(
                                io::ErrorKind::IsADirectory,
                                "is a directory",
                            )));
                        }
                        // A device, FIFO or socket: there is nothing to clobber.
                        Sink::InPlace(BufWriter::new(open_special(p).map_err(err)?))
                    }
                    Ok(_) => Self::temp(p).map_err(err)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Self::temp(p).map_err(err)?,
                    Err(e) => return Err(err(e)),
                }
            }
        };
        Ok(Output {
            dest,
            sink: Some(sink),
            error: None,
        })
    }

    fn temp(path: &Path) -> io::Result<Sink> {
        let temp = temp_path(path);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        // Keep the permissions of a file being replaced.
        if let Ok(m) = fs::metadata(path) {
            let _ = fs::set_permissions(&temp, m.permissions());
        }
        Ok(Sink::Temp {
            file: BufWriter::new(file),
            temp,
        })
    }

    /// Where this output goes.
    pub fn dest(&self) -> &Dest {
        &self.dest
    }

    /// Flushes every buffer (and syncs a temporary file to disk): after this only the
    /// rename is left, so write errors (a full disk) show here.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        if let Some(e) = self.error.take() {
            return Err(WriteError::new(self.dest.clone(), e));
        }
        let r = match self.sink.as_mut() {
            Some(Sink::Stdout(w)) => w.flush(),
            Some(Sink::InPlace(w)) => w.flush(),
            Some(Sink::Temp { file, .. }) => file.flush().and_then(|()| file.get_ref().sync_all()),
            None => Ok(()),
        };
        r.map_err(|e| WriteError::new(self.dest.clone(), e))
    }

    /// Flushes everything and makes the output visible at its destination (renames
    /// the temporary file over it). On error the destination is left as it was.
    pub fn commit(mut self) -> Result<(), WriteError> {
        self.finish()?;
        if let (Some(Sink::Temp { temp, .. }), Dest::File(path)) = (&self.sink, &self.dest) {
            fs::rename(temp, path).map_err(|e| WriteError::new(self.dest.clone(), e))?;
            // Renamed: nothing left for `drop` to remove.
            self.sink = None;
        }
        Ok(())
    }
}

/// Commits several outputs as one: every one is flushed first, and only when all
/// were written completely are they renamed into place. On error every temporary
/// file is removed and every destination left as it was (short of a failing rename,
/// which leaves the outputs before it in place).
pub fn commit_all(mut outputs: Vec<Output>) -> Result<(), WriteError> {
    for o in &mut outputs {
        o.finish()?;
    }
    for o in outputs {
        o.commit()?;
    }
    Ok(())
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(Sink::Temp { temp, .. }) = &self.sink {
            let _ = fs::remove_file(temp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = match self.sink.as_mut() {
            Some(Sink::Stdout(w)) => w.write(buf),
            Some(Sink::Temp { file, .. }) => file.write(buf),
            Some(Sink::InPlace(w)) => w.write(buf),
            None => Ok(buf.len()),
        };
        if let Err(e) = &r
            && self.error.is_none()
        {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = match self.sink.as_mut() {
            Some(Sink::Stdout(w)) => w.flush(),
            Some(Sink::Temp { file, .. }) => file.flush(),
            Some(Sink::InPlace(w)) => w.flush(),
            None => Ok(()),
        };
        if let Err(e) = &r
            && self.error.is_none()
        {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        }
        r
    }
}

/// A log a command appends to while it runs (`run --flowlog`): unlike an [`Output`],
/// it is written in place so that it can be followed (`tail -f`) during the run.
///
/// - `-` is stdout.
/// - A regular file is opened for appending and never truncated: the records of a run
///   follow those already in the file. One that did not exist is created, and
///   [`Log::discard`] removes it again when the command fails before writing to it.
/// - A destination that is not a regular file (a FIFO, a device) is opened without
///   blocking: a FIFO that no process reads is an error (ENXIO) instead of a hang.
///   Writes to it wait for its reader.
pub struct Log {
    dest: Dest,
    sink: LogSink,
    /// The file this log created, while nothing was written to it.
    created: Option<PathBuf>,
}

enum LogSink {
    Stdout,
    File(BufWriter<File>),
    InPlace(BufWriter<Patient>),
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dest", &self.dest)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens `path` (`-` = stdout) for appending; see [`Log`].
    pub fn open(path: &Path) -> Result<Log, WriteError> {
        let dest = Dest::from_arg(path);
        let Dest::File(p) = &dest else {
            return Ok(Log {
                dest,
                sink: LogSink::Stdout,
                created: None,
            });
        };
        let err = |e| WriteError::new(dest.clone(), e);
        let (sink, created) = match fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                return Err(err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                )));
            }
            Ok(m) if !m.is_file() => (
                LogSink::InPlace(BufWriter::new(open_special(p).map_err(err)?)),
                None,
            ),
            Ok(_) => {
                let f = fs::OpenOptions::new().append(true).open(p).map_err(err)?;
                (LogSink::File(BufWriter::new(f)), None)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = fs::OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(p)
                    .map_err(err)?;
                (LogSink::File(BufWriter::new(f)), Some(p.clone()))
            }
            Err(e) => return Err(err(e)),
        };
        Ok(Log {
            dest,
            sink,
            created,
        })
    }

    /// Where this log goes.
    pub fn dest(&self) -> &Dest {
        &self.dest
    }

    /// Gives the log up before anything was written: a file [`Log::open`] created is
    /// removed (if it is still empty), an existing one is left as it was.
    pub fn discard(self) {
        if let Some(p) = &self.created
            && fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0)
        {
            let _ = fs::remove_file(p);
        }
    }

    /// Writes flow-log records (JSON lines) and flushes them.
    pub fn write_records(&mut self, logs: &[crate::flowlog::FlowLog]) -> Result<(), WriteError> {
        if logs.is_empty() {
            return Ok(());
        }
        self.created = None;
        let r = match &mut self.sink {
            LogSink::Stdout => crate::flowlog::write_jsonl(io::stdout().lock(), logs),
            LogSink::File(w) => crate::flowlog::write_jsonl(w, logs),
            LogSink::InPlace(w) => crate::flowlog::write_jsonl(w, logs),
        };
        r.map_err(|e| WriteError::new(self.dest.clone(), e))
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        let r = match &mut self.sink {
            LogSink::Stdout => io::stdout().lock().flush(),
            LogSink::File(w) => w.flush(),
            LogSink::InPlace(w) => w.flush(),
        };
        r.map_err(|e| WriteError::new(self.dest.clone(), e))
    }
}

/// Opens a destination that is not a regular file (a device, a FIFO, a socket) for
/// writing without blocking, so that a FIFO nobody reads is an error (ENXIO) instead of
/// a hang.
fn open_special(p: &Path) -> io::Result<Patient> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map(Patient)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => io::Error::new(e.kind(), "a FIFO that no process reads (ENXIO)"),
            _ => e,
        })
}

/// Reports a failed write the way [`fail`] does (a message on stderr unless stderr
/// failed or a pipe's reader went away) without ending the process, for a command that
/// must still clean up; returns the exit code (2).
pub fn report(e: &WriteError) -> u8 {
    let quiet = e.dest == Dest::Stderr || e.source.kind() == io::ErrorKind::BrokenPipe;
    if !quiet {
        // Nothing more can be done if stderr fails too: the exit code still says it.
        let _ = writeln!(io::stderr().lock(), "tiergate: {e}");
    }
    EXIT_USAGE
}

/// Refuses a command line with more than one writer of stdout: `outputs` are the
/// output flags and their paths (`-` is stdout), and `-o json|yaml` puts a document
/// there too.
pub fn one_writer_on_stdout(
    outputs: &[(&str, Option<&Path>)],
    output: super::Output,
) -> Result<(), String> {
    let mut users: Vec<String> = outputs
        .iter()
        .filter(|(_, p)| p.is_some_and(is_dash))
        .map(|(f, _)| format!("{f} -"))
        .collect();
    if output != super::Output::Table {
        users.push(format!("-o {output:?}").to_lowercase());
    }
    if users.len() > 1 {
        let others = if users.len() > 2 {
            "the others"
        } else {
            "the other"
        };
        return Err(format!(
            "{} write to stdout, which can carry only one of them: send {others} to a file",
            users.join(" and ")
        ));
    }
    Ok(())
}

/// A file a command reads or writes: (device, inode) if it exists, the flag that
/// named it, its path.
type Named<'a> = (Option<(u64, u64)>, &'a str, PathBuf);

/// A file opened with `O_NONBLOCK` (a FIFO, a device) used as if it blocked: an
/// operation that would block is retried after a short sleep.
#[derive(Debug)]
pub struct Patient(pub File);

const PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(PATIENCE),
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl io::Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(PATIENCE),
                r => return r,
            }
        }
    }
}

/// Reads all of `path` (`-` = stdin). A path that is not a regular file (a FIFO, a
/// device) is opened without blocking, so a FIFO that no process writes to reads as
/// empty instead of hanging; one whose writer is connected is read to its end.
pub fn read_all(path: &Path) -> Result<Vec<u8>, String> {
    use io::Read as _;
    let mut bytes = Vec::new();
    let r = if is_dash(path) {
        io::stdin()
            .lock()
            .take(MAX_STREAM_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .and_then(|f| {
                if f.metadata()?.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "is a directory",
                    ));
                }
                Patient(f)
                    .take(MAX_STREAM_BYTES + 1)
                    .read_to_end(&mut bytes)
            })
    };
    let name = if is_dash(path) {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    match r {
        Ok(n) if n as u64 > MAX_STREAM_BYTES => Err(format!(
            "{name}: more than {} GiB: write it to a file and give its path",
            MAX_STREAM_BYTES >> 30
        )),
        Ok(_) => Ok(bytes),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// Largest input read into memory from stdin, a FIFO or a device (bytes).
pub const MAX_STREAM_BYTES: u64 = 1 << 30;

/// Whether `path` is an existing regular file (or a symlink to one).
pub fn is_regular(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Device and inode of an existing file.
fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses outputs that are the same file as an input, or as each other: device and
/// inode are compared, so hard links, symlinks and `./x` vs `x` are caught. `-`
/// (stdin/stdout) and paths that do not exist yet are never the same as an input;
/// character devices (`/dev/null`) may take several outputs. Inputs that are
/// directories are searched for files of the same identity.
pub fn refuse_same_files(
    inputs: &[(&str, &Path)],
    outputs: &[(&str, &Path)],
) -> Result<(), String> {
    let mut seen: Vec<Named<'_>> = Vec::new();
    for &(flag, path) in inputs {
        if is_dash(path) {
            continue;
        }
        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            collect_dir(flag, path, &mut seen, 0);
        } else if let Some(id) = identity(path) {
            seen.push((Some(id), flag, path.to_path_buf()));
        }
    }
    let mut outs: Vec<Named<'_>> = Vec::new();
    for &(flag, path) in outputs {
        if is_dash(path) {
            continue;
        }
        let id = identity(path);
        if fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device()) {
            continue;
        }
        let same = |(i, _, p): &&Named<'_>| match (id, i) {
            (Some(a), Some(b)) => a == *b,
            // Not created yet: the same spelling is the same file.
            _ => p == path,
        };
        if let Some((_, f, p)) = seen.iter().find(same) {
            return Err(same_message(flag, path, "input", f, p));
        }
        if let Some((_, f, p)) = outs.iter().find(same) {
            return Err(same_message(flag, path, "output", f, p));
        }
        outs.push((id, flag, path.to_path_buf()));
    }
    Ok(())
}

fn same_message(flag: &str, path: &Path, what: &str, other_flag: &str, other: &Path) -> String {
    format!(
        "{flag} {} is the same file as the {what} {other_flag} {}: refusing to overwrite it \
         (write the output to another path)",
        path.display(),
        other.display()
    )
}

/// Files below an input directory (bounded depth; symlinks followed as the loader
/// follows them).
fn collect_dir<'a>(flag: &'a str, dir: &Path, seen: &mut Vec<Named<'a>>, depth: usize) {
    if depth > 32 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => collect_dir(flag, &p, seen, depth + 1),
            Ok(m) => seen.push((Some((m.dev(), m.ino())), flag, p)),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tiergate-out-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn output_replaces_only_on_commit() {
        let d = dir("commit");
        let p = d.join("x.txt");
        fs::write(&p, "old").unwrap();
        let mut o = Output::create(&p).unwrap();
        o.write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        drop(o);
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "temp file removed");
        let mut o = Output::create(&p).unwrap();
        o.write_all(b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
    }

    #[test]
    fn a_log_appends_and_a_discarded_new_one_is_removed() {
        let d = dir("log");
        let p = d.join("flows.jsonl");
        fs::write(&p, "earlier\n").unwrap();
        let mut l = Log::open(&p).unwrap();
        let rec = |name: &str| {
            use crate::flowlog::{EndpointType, FlowLog, PolicyTrace, Reporter, Verdict};
            vec![FlowLog {
                start_time: 0,
                end_time: 15,
                source_name: name.into(),
                source_namespace: "-".into(),
                source_type: EndpointType::Workload,
                source_labels: Vec::new(),
                dest_name: name.into(),
                dest_namespace: "-".into(),
                dest_type: EndpointType::Workload,
                dest_labels: Vec::new(),
                dest_port: 80,
                proto: "tcp".into(),
                reporter: Reporter::Dst,
                action: Verdict::Allow.into(),
                pending_action: Verdict::Allow.into(),
                policies: PolicyTrace {
                    enforced: Vec::new(),
                    pending: Vec::new(),
                },
                packets_in: 1,
                packets_out: 1,
                bytes_in: 60,
                bytes_out: 60,
                num_connections_started: 1,
                num_connections_completed: 0,
                num_connections_live: 1,
            }]
        };
        l.write_records(&rec("a")).unwrap();
        l.flush().unwrap();
        drop(l);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("earlier\n{"), "{text}");
        assert_eq!(text.lines().count(), 2);
        // Discarding leaves an existing log as it was.
        Log::open(&p).unwrap().discard();
        assert_eq!(fs::read_to_string(&p).unwrap(), text);
        // A log that did not exist is removed if nothing was written, kept otherwise.
        let new = d.join("new.jsonl");
        Log::open(&new).unwrap().discard();
        assert!(!new.exists());
        let mut l = Log::open(&new).unwrap();
        l.write_records(&rec("b")).unwrap();
        l.discard();
        assert_eq!(fs::read_to_string(&new).unwrap().lines().count(), 1);
        assert!(
            Log::open(&d)
                .unwrap_err()
                .to_string()
                .contains("is a directory")
        );
    }

    #[test]
    fn write_errors_name_the_destination() {
        let mut o = Output::create(Path::new("/dev/full")).unwrap();
        let _ = o.write_all(&[0u8; 1 << 16]);
        let e = o.commit().unwrap_err();
        assert_eq!(e.dest, Dest::File("/dev/full".into()));
        assert!(
            e.to_string().starts_with("cannot write to /dev/full: "),
            "{e}"
        );
        let d = dir("isdir");
        let e = Output::create(&d).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = Output::create(&d.join("no/such/dir/x")).unwrap_err();
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }

    #[test]
    fn stdout_takes_one_writer() {
        use super::super::Output as Format;
        let dash = Path::new("-");
        let file = Path::new("x.pcap");
        assert_eq!(
            one_writer_on_stdout(&[("--flowlog", Some(dash))], Format::Table),
            Ok(())
        );
        assert_eq!(
            one_writer_on_stdout(&[("--flowlog", Some(file))], Format::Json),
            Ok(())
        );
        assert_eq!(
            one_writer_on_stdout(&[("--flowlog", Some(dash))], Format::Json),
            Err("--flowlog - and -o json write to stdout, which can carry only one of them: send the other to a file".into())
        );
        assert_eq!(
            one_writer_on_stdout(
                &[("--allowed-out", Some(dash)), ("--denied-out", None), ("--flowlog", Some(dash))],
                Format::Yaml
            ),
            Err("--allowed-out - and --flowlog - and -o yaml write to stdout, which can carry only one of them: send the others to a file".into())
        );
    }

    #[test]
    fn same_file_is_refused_by_identity_not_name() {
        let d = dir("same");
        let input = d.join("in.pcap");
        fs::write(&input, "x").unwrap();
        let link = d.join("link.pcap");
        fs::hard_link(&input, &link).unwrap();
        let other = d.join("other.pcap");
        let ok = refuse_same_files(&[("--pcap", &input)], &[("--allowed-out", &other)]);
        assert_eq!(ok, Ok(()));
        let e = refuse_same_files(&[("--pcap", &input)], &[("--flowlog", &link)]).unwrap_err();
        assert!(
            e.contains("--flowlog") && e.contains("--pcap") && e.contains("same file"),
            "{e}"
        );
        let e = refuse_same_files(&[("-f", &d)], &[("--allowed-out", &link)]).unwrap_err();
        assert!(e.contains("-f"), "{e}");
        let e = refuse_same_files(&[], &[("--allowed-out", &other), ("--denied-out", &other)])
            .unwrap_err();
        assert!(e.contains("output"), "{e}");
        let null = Path::new("/dev/null");
        assert_eq!(
            refuse_same_files(&[], &[("--allowed-out", null), ("--denied-out", null)]),
            Ok(())
        );
    }
}
