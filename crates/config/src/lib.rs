//! keepalived.conf front end for keeplb.
//!
//! Pipeline: [`preprocess`] (comments, continuation, `@id`, `$PARAM`, `~SEQ`, `include`) →
//! [`syntax`] (tokens and the block tree) → [`model`] (typed configuration with keepalived's
//! defaults) → [`validate`] (cross-references and keepalived's verdicts). Every diagnostic
//! names `file:line:column` in the file the user wrote.

mod build;
pub mod diagnostic;
pub mod env;
pub mod model;
pub mod preprocess;
pub mod source;
pub mod syntax;
pub mod text;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use source::{DiskLoader, FileId, FileLoader, MemoryLoader, SourceMap, Span};
pub mod validate;

use std::path::{Path, PathBuf};

/// How a configuration is read.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Selects `@id` lines (keepalived's `-i`; by default the short host name).
    pub config_id: String,
}

/// The outcome of reading a configuration: the model (as complete as the input allows),
/// every diagnostic, and the sources they point into.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: model::Config,
    pub diagnostics: Diagnostics,
    pub sources: SourceMap,
}

impl Loaded {
    /// Valid as keepalived would judge it: no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.has_errors()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The reason is part of the message, not a source, so that a chain printed with
    // `{:#}` does not say it twice.
    #[error("cannot read configuration file {path}: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Reads, preprocesses, parses and validates the configuration at `path` from disk, checking
/// interfaces and scripts on this machine as `keepalived -t` does.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    load_with(&DiskLoader, &env::SystemEnvironment, path, options)
}

/// Like [`load`], reading files through `loader` and asking `environment` about the machine.
pub fn load_with(
    loader: &dyn FileLoader,
    environment: &dyn env::Environment,
    path: &Path,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let mut sources = SourceMap::default();
    let mut diagnostics = Diagnostics::default();
    let lines =
        preprocess::Preprocessor::new(loader, &mut sources, &mut diagnostics, &options.config_id)
            .run(path)
            .map_err(|error| LoadError::Unreadable {
                path: path.to_path_buf(),
                error,
            })?;
    let tree = syntax::parse(&lines, &mut diagnostics);
    let (config, origins) = build::build(&tree, environment, &mut diagnostics);
    validate::validate(&config, &origins, &mut diagnostics);
    diagnostics.sort_by_location();
    Ok(Loaded {
        config,
        diagnostics,
        sources,
    })
}
