//! Tokens and the block tree of a keepalived.conf.
//!
//! keepalived's grammar is line oriented: a line is a keyword with arguments, optionally
//! opening a block with `{` (on the same line or alone on the next); `}` closes it. Unquoted
//! braces split tokens even without spaces (`authentication{`, `}#comment`).

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::Span;
use crate::text::MappedText;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Word,
    Open,
    Close,
    /// A `//` "comment" up to the next brace or the end of the line (see [`tokenize`]).
    SlashComment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// The word with quotes and escapes removed.
    pub text: String,
    pub span: Span,
    /// Whether any part of the word was quoted (a quoted `{` is a word, not a brace).
    pub quoted: bool,
}

use crate::text::is_blank as is_separator;

/// U+00A0, which web pages put where the author typed spaces.
const NO_BREAK_SPACE: char = '\u{a0}';

/// The tokens of one logical line, and where a `//` "comment" starts, if any.
pub struct LineTokens {
    pub tokens: Vec<Token>,
    /// The first no-break space on the line, read as a blank.
    pub no_break_space: Option<Span>,
}

/// Splits one logical line into tokens as keepalived does: blanks separate words, `{` and
/// `}` are words of their own, a word starting with `"` runs to the next `"` (no escapes).
///
/// Two deliberate departures, each reported: a no-break space separates words (keepalived
/// would make it part of a word), and an unquoted word starting with `//` ends the line
/// (keepalived would read the rest as more words).
pub fn tokenize(line: &MappedText, diagnostics: &mut Diagnostics) -> LineTokens {
    let text = line.as_str();
    let mut tokens = Vec::new();
    let mut no_break_space = None;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c == NO_BREAK_SPACE {
            no_break_space.get_or_insert(start);
        }
        if is_separator(c) || c == NO_BREAK_SPACE {
            chars.next();
            continue;
        }
        if c == '{' || c == '}' {
            chars.next();
            tokens.push(Token {
                kind: if c == '{' {
                    TokenKind::Open
                } else {
                    TokenKind::Close
                },
                text: c.to_string(),
                span: line.span(start, start + 1),
                quoted: false,
            });
            continue;
        }
        if text[start..].starts_with("//") {
            let end = text[start..]
                .find(['{', '}'])
                .map_or(text.len(), |i| start + i);
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            let comment = text[start..end].trim_end_matches(is_separator);
            tokens.push(Token {
                kind: TokenKind::SlashComment,
                text: comment.to_owned(),
                span: line.span(start, start + comment.len()),
                quoted: false,
            });
            continue;
        }
        if c == '"' {
            chars.next();
            let body_start = start + 1;
            let close = text[body_start..].find('"').map(|i| body_start + i);
            let end = close.map_or(text.len(), |i| i + 1);
            if close.is_none() {
                diagnostics.push(
                    Diagnostic::error("unterminated-quote", "unterminated quoted string")
                        .at(line.span(start, end), "the closing `\"` is missing"),
                );
            }
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            tokens.push(Token {
                kind: TokenKind::Word,
                text: text[body_start..close.unwrap_or(text.len())].to_owned(),
                span: line.span(start, end),
                quoted: true,
            });
            continue;
        }
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if is_separator(c) || c == NO_BREAK_SPACE || matches!(c, '{' | '}' | '"') {
                break;
            }
            chars.next();
            end = i + c.len_utf8();
        }
        tokens.push(Token {
            kind: TokenKind::Word,
            text: text[start..end].to_owned(),
            span: line.span(start, end),
            quoted: false,
        });
    }
    LineTokens {
        tokens,
        no_break_space: no_break_space.map(|at| line.span(at, at + NO_BREAK_SPACE.len_utf8())),
    }
}

/// A keyword line with its arguments and, if it opens one, its block.
#[derive(Debug, Clone)]
pub struct Node {
    pub keyword: Token,
    pub args: Vec<Token>,
    pub block: Option<Block>,
    /// A `//` "comment" after the arguments (not part of them; see [`tokenize`]).
    pub slash_comment: Option<Span>,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub open: Span,
    pub children: Vec<Node>,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.keyword.text
    }

    /// Span of the keyword and its arguments.
    pub fn line_span(&self) -> Span {
        self.args
            .last()
            .map_or(self.keyword.span, |last| self.keyword.span.to(last.span))
    }

    pub fn children(&self) -> &[Node] {
        self.block.as_ref().map_or(&[], |b| b.children.as_slice())
    }
}

struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
}

/// Builds the block tree from logical lines; brace errors are reported, and the tree is as
/// complete as the input allows.
/// Real configurations nest four or five blocks deep; far deeper input is garbage, and
/// refusing it keeps every later recursive walk of the tree shallow.
const MAX_DEPTH: usize = 64;

pub fn parse(lines: &[MappedText], diagnostics: &mut Diagnostics) -> Vec<Node> {
    // `{`s beyond MAX_DEPTH, skipped with their contents until their `}`.
    let mut skipped_depth = 0usize;
    let mut stack: Vec<Frame> = vec![Frame {
        node: None,
        children: Vec::new(),
    }];
    // One report per file: pasted configs have them on every line.
    let mut no_break_spaces: std::collections::BTreeMap<crate::source::FileId, (Span, usize)> =
        Default::default();
    for line in lines {
        let mut current: Option<Node> = None;
        let LineTokens {
            tokens,
            no_break_space,
        } = tokenize(line, diagnostics);
        if let Some(span) = no_break_space {
            no_break_spaces.entry(span.file).or_insert((span, 0)).1 += 1;
        }
        for token in tokens {
            if skipped_depth > 0 {
                match token.kind {
                    TokenKind::Open => skipped_depth += 1,
                    TokenKind::Close => skipped_depth -= 1,
                    TokenKind::Word | TokenKind::SlashComment => {}
                }
                continue;
            }
            if token.kind == TokenKind::Open && stack.len() > MAX_DEPTH {
                diagnostics.push(
                    Diagnostic::error(
                        "too-deep",
                        format!("blocks nest deeper than {MAX_DEPTH} levels"),
                    )
                    .at(token.span, "this block and its contents are skipped"),
                );
                current = None;
                skipped_depth = 1;
                continue;
            }
            match token.kind {
                TokenKind::SlashComment => match &mut current {
                    Some(node) => node.slash_comment = Some(token.span),
                    None => diagnostics.push(
                        Diagnostic::warning("double-slash-comment", "`//` does not start a comment in keepalived.conf")
                            .at(token.span, "keeplb ignores this as a comment")
                            .with_note("keepalived would read `//` as a keyword (or a list entry) and reject it; use `#`"),
                    ),
                },
                TokenKind::Word => match &mut current {
                    Some(node) => node.args.push(token),
                    None => {
                        current = Some(Node {
                            keyword: token,
                            args: Vec::new(),
                            block: None,
                            slash_comment: None,
                        })
                    }
                },
                TokenKind::Open => {
                    let owner = current.take().or_else(|| {
                        // `{` alone on a line opens the block of the keyword on the line above.
                        let frame = stack.last_mut()?;
                        match frame.children.last() {
                            Some(last) if last.block.is_none() => frame.children.pop(),
                            _ => None,
                        }
                    });
                    match owner {
                        Some(mut node) => {
                            node.block = Some(Block {
                                open: token.span,
                                children: Vec::new(),
                            });
                            stack.push(Frame {
                                node: Some(node),
                                children: Vec::new(),
                            });
                        }
                        None => {
                            diagnostics.push(
                                Diagnostic::error("stray-brace", "`{` without a keyword")
                                    .at(token.span, "this block has no keyword to belong to"),
                            );
                            // Parse the block anyway so its closing brace still balances.
                            stack.push(Frame {
                                node: None,
                                children: Vec::new(),
                            });
                        }
                    }
                }
                TokenKind::Close => {
                    if let Some(node) = current.take() {
                        push_child(&mut stack, node);
                    }
                    if stack.len() == 1 {
                        diagnostics.push(
                            Diagnostic::error("unbalanced-braces", "unmatched `}`")
                                .at(token.span, "no block is open here"),
                        );
                        continue;
                    }
                    close_frame(&mut stack);
                }
            }
        }
        if let Some(node) = current.take() {
            push_child(&mut stack, node);
        }
    }
    for (span, lines) in no_break_spaces.into_values() {
        diagnostics.push(
            Diagnostic::warning(
                "no-break-space",
                format!("no-break spaces (U+00A0) on {lines} line{}", if lines == 1 { "" } else { "s" }),
            )
            .at(span, "the first one: keeplb reads them as spaces")
            .with_note("keepalived does not: it makes them part of a word, so those lines become unknown keywords; replace them with plain spaces"),
        );
    }
    while stack.len() > 1 {
        if let Some(Some(node)) = stack.last().map(|f| f.node.as_ref()) {
            let open = node.block.as_ref().map_or(node.keyword.span, |b| b.open);
            diagnostics.push(
                Diagnostic::error(
                    "unbalanced-braces",
                    format!("`{}` block is never closed", node.keyword.text),
                )
                .at(open, "this `{` has no matching `}`"),
            );
        }
        close_frame(&mut stack);
    }
    stack.pop().map(|f| f.children).unwrap_or_default()
}

fn push_child(stack: &mut [Frame], node: Node) {
    if let Some(frame) = stack.last_mut() {
        frame.children.push(node);
    }
}

fn close_frame(stack: &mut Vec<Frame>) {
    let Some(frame) = stack.pop() else {
        return;
    };
    match frame.node {
        Some(mut node) => {
            if let Some(block) = &mut node.block {
                block.children = frame.children;
            }
            push_child(stack, node);
        }
        // A stray block's contents are kept at the enclosing level.
        None => {
            if let Some(parent) = stack.last_mut() {
                parent.children.extend(frame.children);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FileId, SourceMap};
    use std::path::PathBuf;

    fn tree(text: &str) -> (Vec<Node>, Diagnostics) {
        let mut sources = SourceMap::default();
        let file: FileId = sources.add(PathBuf::from("t.conf"), text.to_owned());
        let mut offset = 0;
        let lines: Vec<MappedText> = text
            .split_inclusive('\n')
            .map(|l| {
                let m = MappedText::literal(file, l.trim_end_matches('\n'), offset);
                offset += l.len();
                m
            })
            .collect();
        let mut d = Diagnostics::default();
        (parse(&lines, &mut d), d)
    }

    fn shape(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| {
                let mut s = n.keyword.text.clone();
                for a in &n.args {
                    s.push(' ');
                    s.push_str(&a.text);
                }
                if n.block.is_some() {
                    s.push_str(&format!("{{{}}}", shape(n.children())));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    #[test]
    fn braces_split_tokens_and_blocks_nest() {
        let (t, d) = tree("authentication{\n auth_type PASS\n}vrrp_instance X {\n}\n");
        assert!(d.is_empty());
        assert_eq!(
            shape(&t),
            "authentication{auth_type PASS};vrrp_instance X{}"
        );
    }

    #[test]
    fn brace_on_next_line_opens_the_previous_keyword() {
        let (t, _) = tree("virtual_ipaddress\n{\n 10.0.0.1\n 10.0.0.2 dev eth0\n}\n");
        assert_eq!(shape(&t), "virtual_ipaddress{10.0.0.1;10.0.0.2 dev eth0}");
    }

    #[test]
    fn one_line_block() {
        let (t, _) = tree("unicast_peer { 10.0.0.2 }\n");
        assert_eq!(shape(&t), "unicast_peer{10.0.0.2}");
    }

    #[test]
    fn quoted_strings_keep_spaces_and_braces() {
        let (t, _) = tree("script \"/bin/check {a} # x\" arg\n");
        assert_eq!(t[0].args[0].text, "/bin/check {a} # x");
        assert!(t[0].args[0].quoted);
    }

    #[test]
    fn unbalanced_braces_are_errors() {
        let (_, d) = tree("a {\n b {\n }\n");
        assert_eq!(d.error_count(), 1);
        let (_, d) = tree("a {\n}\n}\n");
        assert_eq!(d.error_count(), 1);
    }
}
