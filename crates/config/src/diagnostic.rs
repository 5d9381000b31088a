//! Errors and warnings about a configuration, rendered rustc-style with `file:line:column`.

use std::fmt;
use std::ops::Range;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::{Error as FilesError, Files};
use codespan_reporting::term;
use serde::Serialize;

use crate::source::{FileId, SourceMap, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, but keepalived accepts it silently: never fails a check, even `--strict`.
    Note,
    /// keepalived reports it (so `keepalived -t` fails) but runs on with a clear outcome.
    Warning,
    /// The configuration does not do what it says: keepalived drops or refuses this part.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A message attached to a place in a source file.
#[derive(Debug, Clone)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable short name of the kind of problem (`unknown-keyword`, `out-of-range`…), so tests
    /// and tools need not match message text.
    pub code: &'static str,
    pub message: String,
    pub primary: Option<Label>,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    pub fn note(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, code, message)
    }

    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The place the diagnostic is about; `label` says what is wrong there.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.primary = Some(Label {
            span,
            message: label.into(),
        });
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic with a source snippet; the header names `file:line:column`.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut labels = Vec::new();
        if let Some(primary) = &self.primary {
            labels.push(
                cs::Label::primary(primary.span.file, primary.span.range())
                    .with_message(&primary.message),
            );
        }
        labels.extend(
            self.secondary.iter().map(|l| {
                cs::Label::secondary(l.span.file, l.span.range()).with_message(&l.message)
            }),
        );
        let severity = match self.severity {
            Severity::Note => cs::Severity::Note,
            Severity::Warning => cs::Severity::Warning,
            Severity::Error => cs::Severity::Error,
        };
        let message = match &self.primary {
            // Put file:line:column on the first line too, where grep and editors find it.
            Some(primary) => format!("{}: {}", sources.location(primary.span), self.message),
            None => self.message.clone(),
        };
        let diagnostic = cs::Diagnostic::new(severity)
            .with_code(self.code)
            .with_message(message)
            .with_labels(labels)
            .with_notes(self.notes.clone());
        let config = term::Config::default();
        term::emit_into_string(&config, &Renderable(sources), &diagnostic)
            .unwrap_or_else(|_| format!("{}[{}]: {}\n", self.severity, self.code, self.message))
    }

    /// One line: `file:line:column: severity[code]: message`.
    pub fn one_line(&self, sources: &SourceMap) -> String {
        let location = self
            .primary
            .as_ref()
            .map(|p| format!("{}: ", sources.location(p.span)))
            .unwrap_or_default();
        format!(
            "{location}{}[{}]: {}",
            self.severity, self.code, self.message
        )
    }
}

/// Adapts [`SourceMap`] to codespan's file database.
struct Renderable<'a>(&'a SourceMap);

impl<'a> Files<'a> for Renderable<'a> {
    type FileId = FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<&'a str, FilesError> {
        self.0
            .get(id)
            .map(|f| f.name.as_str())
            .ok_or(FilesError::FileMissing)
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, FilesError> {
        self.0
            .get(id)
            .map(|f| f.text.as_str())
            .ok_or(FilesError::FileMissing)
    }

    fn line_index(&'a self, id: FileId, byte_index: usize) -> Result<usize, FilesError> {
        self.0
            .get(id)
            .map(|f| f.line_index(byte_index))
            .ok_or(FilesError::FileMissing)
    }

    fn line_range(&'a self, id: FileId, line_index: usize) -> Result<Range<usize>, FilesError> {
        let file = self.0.get(id).ok_or(FilesError::FileMissing)?;
        let lines = file.line_starts().len();
        file.line_range(line_index)
            .map(|r| r.start..(r.end + 1).min(file.text.len()))
            .ok_or(FilesError::LineTooLarge {
                given: line_index,
                max: lines.saturating_sub(1),
            })
    }
}

/// The diagnostics of one load, in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    pub fn note_count(&self) -> usize {
        self.count(Severity::Note)
    }

    fn count(&self, severity: Severity) -> usize {
        self.items.iter().filter(|d| d.severity == severity).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Orders diagnostics by where they point, as a reader goes through the files.
    pub fn sort_by_location(&mut self) {
        self.items.sort_by_key(|d| {
            d.primary
                .as_ref()
                .map_or((u32::MAX, u32::MAX), |p| (p.span.file.0, p.span.start))
        });
    }

    /// `--strict`: every warning becomes an error, as `keepalived -t` fails on anything it
    /// reports. Notes stay notes: keepalived accepts those silently.
    pub fn escalate_warnings(&mut self) {
        for d in &mut self.items {
            if d.severity == Severity::Warning {
                d.severity = Severity::Error;
            }
        }
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}
