//! keepalived's textual preprocessing, done before tokenising: comments, line continuation,
//! `@id` conditional lines, `$NAME=VALUE` parameters and their use, the `~SEQ` / `~LST`
//! generators and `include`.
//!
//! The output is a list of logical lines, each mapped back to the file and bytes it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{FileId, FileLoader, SourceMap, Span};
use crate::text::MappedText;

/// Limits that keep hostile or broken input from exhausting time or memory.
const MAX_INCLUDE_DEPTH: usize = 32;
const MAX_EXPANSION_PASSES: usize = 32;
/// Each nested generator holds its own copy of the rest of the line, so unbounded
/// nesting costs memory quadratic in the line's length (and stack).
const MAX_GENERATOR_DEPTH: usize = 16;
const MAX_GENERATED_LINES: usize = 100_000;
const MAX_LINE_BYTES: usize = 1 << 20;
/// What all parameter expansions together may produce (every pass counts): the per-line
/// cap alone lets a generator repeat a megabyte-long expansion for each of its lines.
const MAX_EXPANDED_BYTES: usize = 16 << 20;

pub struct Preprocessor<'a> {
    loader: &'a dyn FileLoader,
    sources: &'a mut SourceMap,
    diagnostics: &'a mut Diagnostics,
    config_id: String,
    params: HashMap<String, Param>,
    include_stack: Vec<PathBuf>,
    generated: usize,
    /// Bytes produced by parameter expansion so far, against [`MAX_EXPANDED_BYTES`].
    expanded: usize,
    /// Generators being expanded around the current line.
    generator_depth: usize,
    /// Set (and reported) once generators nested too deep: expansion stops there, as
    /// each of a generator's iterations would otherwise hit the limit again.
    too_deep: bool,
    lines: Vec<MappedText>,
}

#[derive(Debug, Clone)]
struct Param {
    /// Value lines; more than one for a multi-line definition.
    value: String,
}

impl<'a> Preprocessor<'a> {
    pub fn new(
        loader: &'a dyn FileLoader,
        sources: &'a mut SourceMap,
        diagnostics: &'a mut Diagnostics,
        config_id: &str,
    ) -> Self {
        let predefined = [("_INSTANCE", config_id), ("_HASH", "#"), ("_BANG", "!")];
        let params = predefined
            .iter()
            .map(|(name, value)| {
                (
                    (*name).to_owned(),
                    Param {
                        value: (*value).to_owned(),
                    },
                )
            })
            .collect();
        Preprocessor {
            loader,
            sources,
            diagnostics,
            config_id: config_id.to_owned(),
            params,
            include_stack: Vec::new(),
            generated: 0,
            expanded: 0,
            generator_depth: 0,
            too_deep: false,
            lines: Vec::new(),
        }
    }

    /// Preprocesses the main file. A main file that cannot be read is the caller's error to
    /// report (there is no place in a file to point at), so it is returned.
    pub fn run(mut self, path: &Path) -> std::io::Result<Vec<MappedText>> {
        let text = self.loader.read(path)?;
        self.process_text(path.to_path_buf(), text);
        Ok(self.lines)
    }

    fn process_text(&mut self, path: PathBuf, text: String) {
        let file = self.sources.add(path.clone(), text);
        let text = self
            .sources
            .get(file)
            .map(|f| f.text.clone())
            .unwrap_or_default();
        let pwd = path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let saved_pwd = self.params.insert("_PWD".to_owned(), Param { value: pwd });
        self.include_stack.push(path);
        // A `$NAME=VALUE \` definition being collected over several lines.
        let mut definition: Option<(String, Vec<String>)> = None;
        let mut offset = 0;
        for raw in text.split_inclusive('\n') {
            let line_offset = offset;
            offset += raw.len();
            let raw = raw.trim_end_matches(['\n', '\r']);
            if let Some((name, mut lines)) = definition.take() {
                // keepalived ends a multi-line definition at a truly empty line.
                if raw.is_empty() {
                    self.define(name, lines);
                    continue;
                }
                let content = decomment(file, raw, line_offset).trim();
                match content.as_str().strip_suffix('\\') {
                    Some(part) => {
                        push_value_line(&mut lines, part);
                        definition = Some((name, lines));
                    }
                    None => {
                        push_value_line(&mut lines, content.as_str());
                        self.define(name, lines);
                    }
                }
                continue;
            }
            let content = decomment(file, raw, line_offset).trim();
            if content.is_empty() {
                continue;
            }
            let Some(line) = self.select_conditional(content) else {
                continue;
            };
            if let Some((name, value)) = parse_definition(&line) {
                let value = value.trim();
                match value.as_str().strip_suffix('\\') {
                    Some(part) => {
                        let mut lines = Vec::new();
                        push_value_line(&mut lines, part);
                        definition = Some((name, lines));
                    }
                    None => self.define(name, vec![value.as_str().to_owned()]),
                }
                continue;
            }
            self.process_line(line);
        }
        if let Some((name, lines)) = definition {
            self.define(name, lines);
        }
        self.include_stack.pop();
        match saved_pwd {
            Some(p) => self.params.insert("_PWD".to_owned(), p),
            None => self.params.remove("_PWD"),
        };
    }

    fn define(&mut self, name: String, lines: Vec<String>) {
        self.params.insert(
            name,
            Param {
                value: lines.join("\n"),
            },
        );
    }

    /// `@id rest` keeps `rest` only when the config id is `id`; `@^id rest` only when it isn't.
    fn select_conditional(&self, line: MappedText) -> Option<MappedText> {
        let text = line.as_str();
        let Some(spec) = text.strip_prefix('@') else {
            return Some(line);
        };
        let id_len = spec.find([' ', '\t']).unwrap_or(spec.len());
        let (negated, id) = match spec[..id_len].strip_prefix('^') {
            Some(id) => (true, id),
            None => (false, &spec[..id_len]),
        };
        let keep = (id == self.config_id) != negated;
        keep.then(|| line.slice(1 + id_len, line.len()).trim_start())
    }

    fn process_line(&mut self, line: MappedText) {
        let line = line.trim_start();
        if line.is_empty() {
            return;
        }
        if ["~SEQ(", "~SEQx(", "~LST("]
            .iter()
            .any(|g| line.as_str().starts_with(g))
        {
            self.expand_generator(line);
            return;
        }
        let expanded = self.substitute(&line);
        let substituted = expanded.as_str() != line.as_str();
        for line in expanded.lines() {
            // Substituted text is read again as keepalived reads it: a `#` it brought in
            // starts a comment, an `@` it brought in is a condition, a `~SEQ` a generator.
            let line = if substituted {
                redecomment(&line)
            } else {
                line
            }
            .trim();
            if line.is_empty() {
                continue;
            }
            if substituted && line.as_str().starts_with('@') {
                if let Some(selected) = self.select_conditional(line) {
                    self.process_line(selected);
                }
                continue;
            }
            if substituted && line.as_str().starts_with('~') {
                self.process_line(line);
                continue;
            }
            if self.over_budget(&line) {
                return;
            }
            let is_include = line
                .as_str()
                .strip_prefix("include")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
            if is_include {
                self.include(&line);
            } else {
                self.lines.push(line);
            }
        }
    }

    /// Counts one more generated line; true (reported once) when the budget is spent.
    fn over_budget(&mut self, at: &MappedText) -> bool {
        self.generated += 1;
        if self.generated == MAX_GENERATED_LINES + 1 {
            self.diagnostics.push(
                Diagnostic::error(
                    "too-many-lines",
                    format!("configuration expands to more than {MAX_GENERATED_LINES} lines"),
                )
                .at(at.full_span(), "expansion stopped here"),
            );
        }
        self.generated > MAX_GENERATED_LINES || self.expanded > MAX_EXPANDED_BYTES || self.too_deep
    }

    /// `~SEQ(var, start, step, end) rest` and `~LST(var, v1, v2, …) rest`: `rest` once per
    /// value, with `$var` bound to it.
    fn expand_generator(&mut self, line: MappedText) {
        let text = line.as_str();
        let Some(close) = text.find(')') else {
            self.diagnostics.push(
                Diagnostic::error("bad-generator", "missing `)` in generator").at(
                    line.full_span(),
                    "expected `~SEQ(var, start, step, end)` or `~LST(var, value, …)`",
                ),
            );
            return;
        };
        let is_seq = text.starts_with("~SEQ");
        let hex = text.starts_with("~SEQx");
        let open = text.find('(').unwrap_or(0);
        let header_span = line.span(0, close + 1);
        // The arguments may use parameters themselves.
        let header = self.substitute(&line.slice(open + 1, close));
        let args = split_top_level(header.as_str());
        let rest = line.slice(close + 1, line.len());
        let Some((vars, values)) = args.split_first() else {
            return;
        };
        // `~LST({A,B}, {1,2}, {3,4})` binds several variables per step.
        let vars: Vec<String> = match vars.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            Some(list) if !is_seq => list.split(',').map(|v| v.trim().to_owned()).collect(),
            _ => vec![vars.clone()],
        };
        let steps: Vec<Vec<String>> = if is_seq {
            match sequence_values(values, hex) {
                Ok(values) => values.into_iter().map(|v| vec![v]).collect(),
                Err(reason) => {
                    self.diagnostics.push(
                        Diagnostic::error("bad-generator", format!("invalid ~SEQ: {reason}"))
                            .at(header_span, "expected `~SEQ(var, start, step, end)`"),
                    );
                    return;
                }
            }
        } else {
            values
                .iter()
                .map(
                    |v| match v.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                        Some(group) => group.split(',').map(|x| x.trim().to_owned()).collect(),
                        None => vec![v.clone()],
                    },
                )
                .collect()
        };
        if let Some(var) = vars.iter().find(|v| !valid_name(v)) {
            self.diagnostics.push(
                Diagnostic::error("bad-generator", format!("invalid variable name `{var}`"))
                    .at(header_span, "the first argument names the variable(s)"),
            );
            return;
        }
        if steps.iter().any(|step| step.len() > vars.len()) {
            self.diagnostics.push(
                Diagnostic::error("bad-generator", "~LST specification has too many values").at(
                    header_span,
                    format!("each step binds at most {} variable(s)", vars.len()),
                ),
            );
            return;
        }
        if self.generator_depth >= MAX_GENERATOR_DEPTH {
            if std::mem::replace(&mut self.too_deep, true) {
                return;
            }
            self.diagnostics.push(
                Diagnostic::error(
                    "generator-depth",
                    format!("generators nest deeper than {MAX_GENERATOR_DEPTH}"),
                )
                .at(header_span, "not expanded"),
            );
            return;
        }
        self.generator_depth += 1;
        // keepalived leaves the variables defined (with their last values) afterwards.
        for step in steps {
            // Every iteration counts, even one that produces no line: nested generators
            // over empty templates must not run unbounded.
            if self.over_budget(&rest) {
                break;
            }
            for (n, var) in vars.iter().enumerate() {
                let value = step.get(n).cloned().unwrap_or_default();
                self.params.insert(var.clone(), Param { value });
            }
            self.process_line(rest.clone());
        }
        self.generator_depth -= 1;
    }

    /// Replaces `$NAME` and `${NAME}` with defined values, again and again so values may use
    /// other parameters; unknown names stay as written, as keepalived leaves them.
    fn substitute(&mut self, line: &MappedText) -> MappedText {
        let mut current = line.clone();
        for _ in 0..MAX_EXPANSION_PASSES {
            let Some((next, changed)) = self.substitute_once(&current) else {
                self.diagnostics.push(
                    Diagnostic::error(
                        "line-too-long",
                        format!(
                            "parameter expansion makes this line longer than {MAX_LINE_BYTES} bytes"
                        ),
                    )
                    .at(line.full_span(), "expansion stopped here"),
                );
                return MappedText::empty(line.file);
            };
            if !changed {
                return next;
            }
            if self.expansion_over_budget(next.len(), line) {
                return MappedText::empty(line.file);
            }
            current = next;
        }
        self.diagnostics.push(
            Diagnostic::error(
                "recursive-parameter",
                "parameter expansion does not terminate (a definition uses itself?)",
            )
            .at(line.full_span(), "while expanding this line"),
        );
        MappedText::empty(line.file)
    }

    /// Counts `bytes` more of expansion; true once the budget is spent (reported once).
    fn expansion_over_budget(&mut self, bytes: usize, at: &MappedText) -> bool {
        let was_within = self.expanded <= MAX_EXPANDED_BYTES;
        self.expanded = self.expanded.saturating_add(bytes);
        let over = self.expanded > MAX_EXPANDED_BYTES;
        if over && was_within {
            self.diagnostics.push(
                Diagnostic::error(
                    "too-much-expansion",
                    format!(
                        "parameter expansion produces more than {} MiB in all",
                        MAX_EXPANDED_BYTES >> 20
                    ),
                )
                .at(at.full_span(), "expansion stopped here"),
            );
        }
        over
    }

    /// One pass of substitution; `None` when the result would exceed [`MAX_LINE_BYTES`].
    fn substitute_once(&self, line: &MappedText) -> Option<(MappedText, bool)> {
        let text = line.as_str();
        let mut out = MappedText::empty(line.file);
        let mut changed = false;
        let mut copied_to = 0;
        let mut search_from = 0;
        while let Some(pos) = text[search_from..].find('$').map(|p| p + search_from) {
            search_from = pos + 1;
            let Some((name, end)) = parameter_reference(text, pos) else {
                continue;
            };
            let Some(param) = self.params.get(name) else {
                continue;
            };
            if out.len() + param.value.len() > MAX_LINE_BYTES {
                return None;
            }
            out.append(&line.slice(copied_to, pos));
            out.push_standing_for(&param.value, line.span(pos, end).range_tuple());
            copied_to = end;
            search_from = end;
            changed = true;
        }
        out.append(&line.slice(copied_to, text.len()));
        Some((out, changed))
    }

    fn include(&mut self, line: &MappedText) {
        let text = line.as_str();
        let pattern_start = "include".len()
            + (text.len() - "include".len() - text["include".len()..].trim_start().len());
        let pattern = text[pattern_start..].trim();
        let span = line.span(pattern_start, text.len());
        if pattern.is_empty() {
            self.diagnostics.push(
                Diagnostic::error("bad-include", "`include` needs a file name or pattern")
                    .at(line.full_span(), "nothing to include"),
            );
            return;
        }
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH {
            self.diagnostics.push(
                Diagnostic::error(
                    "include-depth",
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
                )
                .at(span, "not included"),
            );
            return;
        }
        let base = self
            .include_stack
            .last()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut matched = Vec::new();
        for word in pattern.split_whitespace() {
            for alternative in expand_braces(word) {
                let full = if Path::new(&alternative).is_absolute() {
                    PathBuf::from(&alternative)
                } else {
                    base.join(&alternative)
                };
                let full = normalize(&full).to_string_lossy().into_owned();
                matched.extend(self.loader.glob(&full));
            }
        }
        if matched.is_empty() {
            self.diagnostics.push(
                Diagnostic::note(
                    "include-no-match",
                    format!("`include {pattern}` matches no file"),
                )
                .at(span, "nothing included")
                .with_note(format!(
                    "relative patterns are resolved against `{}`",
                    if base.as_os_str().is_empty() {
                        ".".into()
                    } else {
                        base.display().to_string()
                    }
                )),
            );
            return;
        }
        for path in matched {
            if self.include_stack.contains(&path) {
                // keepalived recurses until it runs out of file descriptors, then skips it.
                self.diagnostics.push(
                    Diagnostic::note(
                        "include-cycle",
                        format!("`{}` includes itself", path.display()),
                    )
                    .at(span, "this include closes a cycle"),
                );
                continue;
            }
            if self.loader.is_dir(&path) {
                self.diagnostics.push(
                    Diagnostic::note(
                        "include-directory",
                        format!("`{}` is a directory", path.display()),
                    )
                    .at(span, "skipped, as keepalived skips it"),
                );
                continue;
            }
            match self.loader.read(&path) {
                Ok(text) => self.process_text(path, text),
                Err(e) => self.diagnostics.push(
                    Diagnostic::error(
                        "include-unreadable",
                        format!("cannot read included file `{}`: {e}", path.display()),
                    )
                    .at(span, "included here"),
                ),
            }
        }
    }
}

/// Removes `.` and `..` lexically, as the kernel would resolve them without symlinks; glob
/// patterns do not match paths that still contain them.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn push_value_line(lines: &mut Vec<String>, part: &str) {
    let part = part.trim_end();
    if !part.is_empty() || lines.is_empty() {
        lines.push(part.to_owned());
    }
}

/// keepalived's `decomment`: `#` or `!` outside double quotes starts a comment, anywhere on
/// the line; outside quotes `\#` and `\!` stand for the character itself.
fn decomment(file: FileId, raw: &str, offset: usize) -> MappedText {
    let mut out = MappedText::empty(file);
    let mut in_quote = false;
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => in_quote = !in_quote,
            '#' | '!' if !in_quote => break,
            '\\' if !in_quote => {
                if let Some(&(j, '#' | '!')) = chars.peek() {
                    chars.next();
                    out.push_literal(&raw[j..j + 1], offset + j);
                    continue;
                }
            }
            _ => {}
        }
        out.push_literal(&raw[i..i + c.len_utf8()], offset + i);
    }
    out
}

/// [`decomment`] applied to text that has already been mapped.
fn redecomment(line: &MappedText) -> MappedText {
    let text = line.as_str();
    let mut in_quote = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            '#' | '!' if !in_quote => return line.slice(0, i),
            _ => {}
        }
    }
    line.clone()
}

fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `$NAME=VALUE` (no space before `=`): the name and the value text.
fn parse_definition(line: &MappedText) -> Option<(String, MappedText)> {
    let text = line.as_str();
    let rest = text.strip_prefix('$')?;
    let name_len = rest.find(|c: char| !is_param_char(c)).unwrap_or(rest.len());
    if name_len == 0 || !rest[name_len..].starts_with('=') {
        return None;
    }
    let name = rest[..name_len].to_owned();
    Some((name, line.slice(1 + name_len + 1, text.len())))
}

/// A parameter reference at `pos` (which holds `$`): the name and the end of the reference.
/// As in keepalived, a bare `$NAME` counts only when followed by the end of the line, a
/// blank, `,` or `)`; `${NAME}` works anywhere.
fn parameter_reference(text: &str, pos: usize) -> Option<(&str, usize)> {
    let rest = &text[pos + 1..];
    if let Some(braced) = rest.strip_prefix('{') {
        let close = braced.find('}')?;
        let name = &braced[..close];
        valid_name(name).then_some((name, pos + 2 + close + 1))
    } else {
        let len = rest.find(|c: char| !is_param_char(c)).unwrap_or(rest.len());
        let terminated = rest[len..]
            .chars()
            .next()
            .is_none_or(|c| matches!(c, ' ' | '\t' | ',' | ')'));
        (valid_name(&rest[..len]) && terminated).then(|| (&rest[..len], pos + 1 + len))
    }
}

fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(is_param_char)
}

/// `~SEQ` arguments after the variable: `(end)`, `(start, end)` or `(start, step, end)`,
/// with keepalived's implied steps and its refusal of a step that never reaches the end.
fn sequence_values(args: &[String], hex: bool) -> Result<Vec<String>, String> {
    let numbers: Vec<i128> = args
        .iter()
        .map(|a| {
            parse_c_integer(a)
                .map(i128::from)
                .ok_or_else(|| format!("`{a}` is not an integer"))
        })
        .collect::<Result<_, _>>()?;
    let (start, step, end) = match numbers.as_slice() {
        [end] if *end < 0 => (-1, -1, *end),
        [end] => (1, 1, *end),
        [start, end] => (*start, if end >= start { 1 } else { -1 }, *end),
        [start, step, end] => (*start, *step, *end),
        _ => return Err("expected 2 to 4 arguments".to_owned()),
    };
    if step == 0 || (end - start).signum() * step.signum() < 0 {
        return Err(format!("step {step} never goes from {start} to {end}"));
    }
    if hex && (start < 0 || end < 0) {
        return Err("~SEQx is only valid for positive numbers".to_owned());
    }
    let count = (end - start) / step + 1;
    if count > MAX_GENERATED_LINES as i128 {
        return Err(format!("more than {MAX_GENERATED_LINES} values"));
    }
    Ok((0..count)
        .map(|i| start + i * step)
        .map(|v| if hex { format!("{v:x}") } else { v.to_string() })
        .collect())
}

/// `strtol(…, 0)`: decimal, `0x` hexadecimal or leading-zero octal.
fn parse_c_integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -value } else { value })
}

/// Splits generator arguments at commas outside `{…}` groups.
fn split_top_level(args: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in args.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_owned());
    parts
}

/// How many paths one include word may expand to.
const MAX_BRACE_ALTERNATIVES: usize = 1024;

/// Shell-style brace expansion of one word: `a{b,c}d` → `abd`, `acd`; at most
/// [`MAX_BRACE_ALTERNATIVES`] results.
fn expand_braces(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand_braces_into(word, &mut out);
    out
}

fn expand_braces_into(word: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_BRACE_ALTERNATIVES {
        return;
    }
    let Some(open) = word.find('{') else {
        out.push(word.to_owned());
        return;
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in word[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let (Some(close), false) = (close, commas.is_empty()) else {
        out.push(word.to_owned());
        return;
    };
    let prefix = &word[..open];
    let suffix = &word[close + 1..];
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    for w in bounds.windows(2) {
        expand_braces_into(&format!("{prefix}{}{suffix}", &word[w[0] + 1..w[1]]), out);
    }
}

trait RangeTuple {
    fn range_tuple(&self) -> (u32, u32);
}

impl RangeTuple for Span {
    fn range_tuple(&self) -> (u32, u32) {
        (self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemoryLoader;

    fn preprocess(loader: &MemoryLoader, id: &str) -> (Vec<String>, Diagnostics) {
        let mut sources = SourceMap::default();
        let mut diagnostics = Diagnostics::default();
        let lines = Preprocessor::new(loader, &mut sources, &mut diagnostics, id)
            .run(Path::new("/etc/k/keepalived.conf"))
            .expect("main file exists");
        (
            lines.iter().map(|l| l.as_str().to_owned()).collect(),
            diagnostics,
        )
    }

    fn lines_of(text: &str) -> Vec<String> {
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", text);
        preprocess(&loader, "host1").0
    }

    #[test]
    fn comments_respect_quotes_and_escapes() {
        assert_eq!(
            lines_of("a b # c\n! whole\nscript \"x # y\" ! z\nd \\# e\nf\"q\\#\"\n"),
            ["a b", "script \"x # y\"", "d # e", "f\"q\\#\""]
        );
    }

    #[test]
    fn a_trailing_backslash_continues_only_definitions() {
        // keepalived glues a stray `\` to the last word instead of joining lines.
        assert_eq!(lines_of("a \\\nb\n"), ["a \\", "b"]);
        assert_eq!(lines_of("$X=one \\\n  two\n$X\n"), ["one", "two"]);
    }

    #[test]
    fn an_empty_line_ends_a_multi_line_definition() {
        assert_eq!(lines_of("$X=one \\\n\ntwo\n$X\n"), ["two", "one"]);
    }

    #[test]
    fn conditional_lines_follow_the_config_id() {
        let text = "@host1 a\n@host2 b\n@^host1 c\n@^host2 d\n";
        assert_eq!(lines_of(text), ["a", "d"]);
    }

    #[test]
    fn parameters_expand_recursively_and_unknown_stay() {
        let text = "$A=1.2.3.4\n$B=${A}/24\nvip $B $UNKNOWN\n";
        assert_eq!(lines_of(text), ["vip 1.2.3.4/24 $UNKNOWN"]);
    }

    #[test]
    fn bare_reference_needs_a_terminator() {
        // `$A/24` is not a reference in keepalived; `${A}/24` is.
        assert_eq!(
            lines_of("$A=10.0.0.1\nx $A/24 ${A}/24 f($A,$A)\n"),
            ["x $A/24 10.0.0.1/24 f(10.0.0.1,10.0.0.1)"]
        );
    }

    #[test]
    fn predefined_parameters() {
        assert_eq!(
            lines_of("id ${_INSTANCE} dir ${_PWD} h \"${_HASH}\"\n"),
            ["id host1 dir /etc/k h \"#\""]
        );
    }

    #[test]
    fn multi_line_parameter_expands_to_several_lines() {
        let text = "$RS=real_server 10.0.0.1 80 { \\\n weight 2 \\\n}\n$RS\n";
        assert_eq!(
            lines_of(text),
            ["real_server 10.0.0.1 80 {", "weight 2", "}"]
        );
    }

    #[test]
    fn self_referencing_parameter_is_an_error_not_a_hang() {
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", "$A=x$A\n$A\n");
        let (_, diags) = preprocess(&loader, "h");
        assert!(diags.iter().any(|d| d.code == "recursive-parameter"));
    }

    #[test]
    fn generators_replicate_the_line() {
        assert_eq!(
            lines_of("~SEQ(i, 1, 2, 5) vip 10.0.0.$i\n~LST(n, a, b) name $n\n"),
            [
                "vip 10.0.0.1",
                "vip 10.0.0.3",
                "vip 10.0.0.5",
                "name a",
                "name b"
            ]
        );
    }

    #[test]
    fn generator_forms_follow_keepalived() {
        assert_eq!(lines_of("~SEQ(i, 3) n $i\n"), ["n 1", "n 2", "n 3"]);
        assert_eq!(lines_of("~SEQ(i, 5, 3) n $i\n"), ["n 5", "n 4", "n 3"]);
        assert_eq!(lines_of("~SEQx(i, 9, 3, 15) n $i\n"), ["n 9", "n c", "n f"]);
        assert_eq!(lines_of("~SEQ(i, 1, 2) a\nlast $i\n"), ["a", "a", "last 2"]);
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", "~SEQ(i, 1, 0, 3) x\n");
        let (lines, diags) = preprocess(&loader, "h");
        assert!(lines.is_empty());
        assert_eq!(diags.iter().next().map(|d| d.code), Some("bad-generator"));
    }

    #[test]
    fn include_is_relative_to_the_including_file_and_globbed() {
        let loader = MemoryLoader::new()
            .with(
                "/etc/k/keepalived.conf",
                "top\ninclude conf.d/*.conf\nend\n",
            )
            .with("/etc/k/conf.d/b.conf", "from b\n")
            .with("/etc/k/conf.d/a.conf", "from a\ninclude ../{y,x}.inc\n")
            .with("/etc/k/x.inc", "x\n")
            .with("/etc/k/y.inc", "y\n");
        let (lines, diags) = preprocess(&loader, "h");
        assert_eq!(lines, ["top", "from a", "y", "x", "from b", "end"]);
        assert!(diags.is_empty());
    }

    #[test]
    fn include_cycle_is_reported() {
        let loader =
            MemoryLoader::new().with("/etc/k/keepalived.conf", "include keepalived.conf\n");
        let (_, diags) = preprocess(&loader, "h");
        assert!(diags.iter().any(|d| d.code == "include-cycle"));
    }

    #[test]
    fn spans_point_into_the_right_file() {
        let loader = MemoryLoader::new()
            .with("/etc/k/keepalived.conf", "a\ninclude inc.conf\n")
            .with("/etc/k/inc.conf", "\n  priority 300\n");
        let mut sources = SourceMap::default();
        let mut diagnostics = Diagnostics::default();
        let lines = Preprocessor::new(&loader, &mut sources, &mut diagnostics, "h")
            .run(Path::new("/etc/k/keepalived.conf"))
            .unwrap();
        let line = &lines[1];
        let span = line.span(9, 12);
        assert_eq!(sources.snippet(span), "300");
        assert_eq!(sources.location(span), "/etc/k/inc.conf:2:12");
    }

    /// Inputs found by review and fuzzing that used to hang, overflow or exhaust memory;
    /// each must finish quickly with a diagnostic.
    #[test]
    fn hostile_inputs_are_bounded() {
        let cases = [
            "~SEQ(i, -9223372036854775807, 9223372036854775807) x\n".to_owned(),
            "~SEQ(a, 1000) ~SEQ(b, 1000) ~SEQ(c, 1000)\n".to_owned(),
            format!("$A={}\nx {}\n", "y".repeat(200_000), "$A ".repeat(20_000)),
            format!("include {}\n", "{a,b}".repeat(22)),
        ];
        for text in cases {
            let started = std::time::Instant::now();
            let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", text.clone());
            let (_, diags) = preprocess(&loader, "h");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "slow on {:.40}",
                text
            );
            assert!(!diags.is_empty(), "no diagnostic for {:.40}", text);
        }
    }

    /// Found by fuzzing: each line stays under the per-line cap, but a generator repeats
    /// its expansion, so the lines together grew without bound (here 200 lines of 1 MB).
    #[test]
    fn total_expansion_is_bounded() {
        let text = format!(
            "$A={}\n$B={}\n~SEQ(i, 1, 200) x $B\n",
            "y".repeat(1000),
            "${A}".repeat(1000)
        );
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", text);
        let (lines, diags) = preprocess(&loader, "h");
        let total: usize = lines.iter().map(String::len).sum();
        assert!(total <= MAX_EXPANDED_BYTES, "{total} bytes of lines");
        assert!(diags.iter().any(|d| d.code == "too-much-expansion"));
    }

    /// Found while fuzzing the preprocessor: 5000 generators nested on one 60 kB line took
    /// over 2 GB (each level holds its own copy of the rest of the line), and 3000 overflow
    /// a 2 MiB thread stack.
    #[test]
    fn generator_nesting_is_bounded() {
        let nested = |depth: usize| format!("{}x\n", "~SEQ(a, 1, 1) ".repeat(depth));
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", nested(3000));
        let (lines, diags) = preprocess(&loader, "h");
        assert!(lines.is_empty(), "{} lines", lines.len());
        assert!(diags.iter().any(|d| d.code == "generator-depth"));

        // Reported once, and the outer generators stop rather than hit it 2^16 times.
        let wide = format!("{}x\n", "~SEQ(a, 1, 2) ".repeat(MAX_GENERATOR_DEPTH + 1));
        let loader = MemoryLoader::new().with("/etc/k/keepalived.conf", wide);
        let (lines, diags) = preprocess(&loader, "h");
        assert!(lines.is_empty(), "{} lines", lines.len());
        assert_eq!(diags.len(), 1, "{diags:?}");

        let loader =
            MemoryLoader::new().with("/etc/k/keepalived.conf", nested(MAX_GENERATOR_DEPTH));
        let (lines, diags) = preprocess(&loader, "h");
        assert_eq!(lines, ["x"]);
        assert!(diags.is_empty());
    }
}
