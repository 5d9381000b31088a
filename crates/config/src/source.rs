//! The files a configuration was read from, and spans into them.
//!
//! Every token keeps the file and byte range it came from, so a diagnostic about a value
//! that arrived through `include` or a `$PARAMETER` still points at the line the user wrote.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, range: Range<usize>) -> Self {
        Span {
            file,
            start: saturating_u32(range.start),
            end: saturating_u32(range.end),
        }
    }

    pub fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The smallest span covering both; spans from different files keep `self`.
    pub fn to(&self, other: Span) -> Span {
        if self.file != other.file {
            return *self;
        }
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One file as it was read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user will recognise it (as given, or as the include resolved it).
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            name: path.display().to_string(),
            path,
            text,
            line_starts,
        }
    }

    /// Zero-based line index containing `offset`.
    pub fn line_index(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next.saturating_sub(1),
        }
    }

    /// Byte range of a zero-based line, without its newline.
    pub fn line_range(&self, line_index: usize) -> Option<Range<usize>> {
        let start = *self.line_starts.get(line_index)?;
        let end = self
            .line_starts
            .get(line_index + 1)
            .map_or(self.text.len(), |next| next - 1);
        Some(start..end.max(start))
    }

    pub fn line_starts(&self) -> &[usize] {
        &self.line_starts
    }

    /// One-based (line, column) of a byte offset; columns count characters, as editors do.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_index(offset);
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let end = offset.min(self.text.len());
        let column = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        (line + 1, column)
    }
}

/// All files read for one configuration, in the order they were first opened.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        let id = FileId(saturating_u32(self.files.len()));
        self.files.push(SourceFile::new(path, text));
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(saturating_u32(i)), f))
    }

    /// `file:line:column` of a span's start, the form every diagnostic leads with.
    pub fn location(&self, span: Span) -> String {
        match self.get(span.file) {
            Some(file) => {
                let (line, column) = file.line_col(span.start as usize);
                format!("{}:{line}:{column}", file.name)
            }
            None => "<unknown>".to_owned(),
        }
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file)
            .and_then(|f| f.text.get(span.range()))
            .unwrap_or("")
    }
}

/// Where configuration files come from: the real file system, or memory (tests, fuzzing).
pub trait FileLoader {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// Paths matching an include pattern, sorted, as keepalived's glob() gives them.
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
    fn is_dir(&self, path: &Path) -> bool;
}

/// Reads files from disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskLoader;

impl FileLoader for DiskLoader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let bytes = std::fs::read(path)?;
        // keepalived reads bytes; configs in the wild carry Latin-1 comments, which must not
        // make the whole file unreadable.
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = match glob::glob(pattern) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        paths
    }
}

/// Files held in memory, for tests and the fuzzer (which must never touch the disk).
#[derive(Debug, Default, Clone)]
pub struct MemoryLoader {
    files: std::collections::BTreeMap<PathBuf, String>,
}

impl MemoryLoader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.files.insert(path.into(), text.into());
        self
    }
}

impl FileLoader for MemoryLoader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|f| f.parent() == Some(path))
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let Ok(pattern) = glob::Pattern::new(pattern) else {
            return Vec::new();
        };
        self.files
            .keys()
            .filter(|p| pattern.matches_path(p))
            .cloned()
            .collect()
    }
}
