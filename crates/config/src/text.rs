//! Text that remembers, byte by byte, where in its source file it came from.
//!
//! Preprocessing joins continued lines, removes comments and substitutes parameters; a
//! [`MappedText`] carries the origin of each byte through all of that so the lexer can still
//! give every token an exact [`Span`].

use crate::source::{FileId, Span};

/// keepalived's separators (C `isspace`).
pub fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedText {
    pub file: FileId,
    text: String,
    /// For each byte of `text`, the source byte range it stands for: one byte for literal text,
    /// the whole `$NAME` reference for substituted text.
    origins: Vec<(u32, u32)>,
}

impl MappedText {
    pub fn empty(file: FileId) -> Self {
        MappedText {
            file,
            text: String::new(),
            origins: Vec::new(),
        }
    }

    /// Literal source text starting at byte `offset` of `file`.
    pub fn literal(file: FileId, text: &str, offset: usize) -> Self {
        let mut mapped = Self::empty(file);
        mapped.push_literal(text, offset);
        mapped
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn push_literal(&mut self, text: &str, offset: usize) {
        self.text.push_str(text);
        let base = offset as u32;
        self.origins
            .extend((0..text.len() as u32).map(|i| (base + i, base + i + 1)));
    }

    /// Text that stands for the source range `origin` (a substituted parameter, a generated value).
    pub fn push_standing_for(&mut self, text: &str, origin: (u32, u32)) {
        self.text.push_str(text);
        self.origins.extend(std::iter::repeat_n(origin, text.len()));
    }

    pub fn push_char_like(&mut self, other: &MappedText, at: usize, c: char) {
        let origin = other.origin(at);
        let mut buf = [0u8; 4];
        self.push_standing_for(c.encode_utf8(&mut buf), origin);
    }

    pub fn append(&mut self, other: &MappedText) {
        self.text.push_str(&other.text);
        self.origins.extend_from_slice(&other.origins);
    }

    fn origin(&self, at: usize) -> (u32, u32) {
        self.origins
            .get(at)
            .or_else(|| self.origins.last())
            .copied()
            .unwrap_or((0, 0))
    }

    /// A sub-range of this text (byte indices on char boundaries).
    pub fn slice(&self, start: usize, end: usize) -> MappedText {
        let start = start.min(self.text.len());
        let end = end.clamp(start, self.text.len());
        MappedText {
            file: self.file,
            text: self.text.get(start..end).unwrap_or("").to_owned(),
            origins: self.origins.get(start..end).unwrap_or(&[]).to_vec(),
        }
    }

    /// Trims keepalived's blanks only: a no-break space is not one (the lexer reports it).
    pub fn trim_start(&self) -> MappedText {
        let start = self.text.len() - self.text.trim_start_matches(is_blank).len();
        self.slice(start, self.text.len())
    }

    pub fn trim_end(&self) -> MappedText {
        self.slice(0, self.text.trim_end_matches(is_blank).len())
    }

    pub fn trim(&self) -> MappedText {
        self.trim_start().trim_end()
    }

    /// The source span of a byte range of this text.
    pub fn span(&self, start: usize, end: usize) -> Span {
        let first = self.origin(start);
        let last = if end > start {
            self.origin(end - 1)
        } else {
            first
        };
        Span {
            file: self.file,
            start: first.0.min(last.0),
            end: first.1.max(last.1),
        }
    }

    pub fn full_span(&self) -> Span {
        self.span(0, self.text.len())
    }

    /// Splits at `\n` (multi-line parameter values expand to several lines).
    pub fn lines(&self) -> Vec<MappedText> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, _) in self.text.match_indices('\n') {
            out.push(self.slice(start, i));
            start = i + 1;
        }
        out.push(self.slice(start, self.text.len()));
        out
    }
}
