//! The option scanner ipvsadm uses (libpopt), reduced to what ipvsadm's table needs:
//! bundled short options (`-Lnc`), a short option's argument in the same word (`-w3`,
//! `-p=600`) or the next one, long options with `=value`, optional arguments taken only
//! when the next word does not start with `-`, `--`, and words that are not options kept
//! aside as leftovers. Errors carry the word popt blames (`poptBadOption`).

/// Does an option take an argument?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    None,
    Required,
    Optional,
}

/// An entry of the option table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptDef<T> {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: ArgKind,
    pub id: T,
}

/// What popt reports when scanning fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PoptError {
    /// POPT_ERROR_BADOPT.
    UnknownOption(String),
    /// POPT_ERROR_NOARG.
    MissingArgument(String),
    /// POPT_ERROR_UNWANTEDARG.
    UnwantedArgument(String),
}

impl PoptError {
    /// `"%s: %s"` with `poptBadOption` and `poptStrerror`, as ipvsadm prints it.
    pub fn message(&self) -> String {
        match self {
            PoptError::UnknownOption(word) => format!("{word}: unknown option"),
            PoptError::MissingArgument(word) => format!("{word}: missing argument"),
            PoptError::UnwantedArgument(word) => {
                format!("{word}: option does not take an argument")
            }
        }
    }
}

/// Scans `args` (without the program name) against `table`.
pub(crate) struct Popt<'a, T: 'static> {
    table: &'static [OptDef<T>],
    args: &'a [String],
    next: usize,
    /// Inside a bundle of short options: the word's index and the byte offset of the next one.
    bundle: Option<(usize, usize)>,
    rest_are_leftovers: bool,
    leftovers: std::collections::VecDeque<&'a str>,
    last_word: usize,
}

impl<'a, T: Copy> Popt<'a, T> {
    pub fn new(table: &'static [OptDef<T>], args: &'a [String]) -> Self {
        Popt {
            table,
            args,
            next: 0,
            bundle: None,
            rest_are_leftovers: false,
            leftovers: Default::default(),
            last_word: 0,
        }
    }

    /// The word the last option (or its argument) came from, as `poptBadOption` names it.
    pub fn last_word(&self) -> &'a str {
        self.args
            .get(self.last_word)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Next leftover word (`poptGetArg`), once options are exhausted.
    pub fn next_leftover(&mut self) -> Option<&'a str> {
        self.leftovers.pop_front()
    }

    /// The argument of an option whose word did not include it.
    fn argument_from_next_word(
        &mut self,
        kind: ArgKind,
        word: &'a str,
    ) -> Result<Option<String>, PoptError> {
        match self.args.get(self.next) {
            Some(next) if kind == ArgKind::Optional && next.starts_with('-') => Ok(None),
            Some(next) => {
                self.last_word = self.next;
                self.next += 1;
                Ok(Some(next.clone()))
            }
            None if kind == ArgKind::Required => Err(PoptError::MissingArgument(word.to_owned())),
            None => Ok(None),
        }
    }

    /// The next option and its argument; `Ok(None)` once all words are read.
    pub fn next_opt(&mut self) -> Result<Option<(T, Option<String>)>, PoptError> {
        loop {
            if let Some((index, offset)) = self.bundle.take() {
                let word = self.args[index].as_str();
                let Some(c) = word[offset..].chars().next() else {
                    continue;
                };
                let rest_offset = offset + c.len_utf8();
                let def = self
                    .table
                    .iter()
                    .find(|d| d.short == Some(c))
                    .ok_or_else(|| PoptError::UnknownOption(word.to_owned()))?;
                let rest = &word[rest_offset..];
                if def.arg == ArgKind::None {
                    if !rest.is_empty() {
                        self.bundle = Some((index, rest_offset));
                    }
                    return Ok(Some((def.id, None)));
                }
                if !rest.is_empty() {
                    let value = rest.strip_prefix('=').unwrap_or(rest);
                    return Ok(Some((def.id, Some(value.to_owned()))));
                }
                let value = self.argument_from_next_word(def.arg, word)?;
                return Ok(Some((def.id, value)));
            }
            let Some(word) = self.args.get(self.next).map(String::as_str) else {
                return Ok(None);
            };
            self.last_word = self.next;
            self.next += 1;
            if self.rest_are_leftovers || !word.starts_with('-') || word == "-" {
                self.leftovers.push_back(word);
                continue;
            }
            if word == "--" {
                self.rest_are_leftovers = true;
                continue;
            }
            let Some(long) = word.strip_prefix("--") else {
                self.bundle = Some((self.next - 1, 1));
                continue;
            };
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let def = self
                .table
                .iter()
                .find(|d| d.long == name)
                .ok_or_else(|| PoptError::UnknownOption(word.to_owned()))?;
            return match (def.arg, inline) {
                (ArgKind::None, Some(_)) => Err(PoptError::UnwantedArgument(word.to_owned())),
                (ArgKind::None, None) => Ok(Some((def.id, None))),
                (_, Some(value)) => Ok(Some((def.id, Some(value.to_owned())))),
                (kind, None) => Ok(Some((def.id, self.argument_from_next_word(kind, word)?))),
            };
        }
    }
}
