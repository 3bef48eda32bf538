//! Errors of loading plugins. Hook-time failures never surface as errors: they become the
//! plugin's failure policy (see the crate docs).

use std::path::PathBuf;

/// Why a plugin (or the engine) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be created with the requested configuration.
    #[error("engine setup failed: {0}")]
    Engine(String),
    /// The component file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid component, or it failed to compile.
    #[error("plugin {plugin}: compile failed: {reason}")]
    Compile { plugin: String, reason: String },
    /// The component's imports or exports do not match the `corvid:plugin` world.
    #[error("plugin {plugin}: link failed: {reason}")]
    Link { plugin: String, reason: String },
    /// Instantiation, `describe` or `configure` failed, or `configure` refused the config.
    #[error("plugin {plugin}: configure failed: {reason}")]
    Configure { plugin: String, reason: String },
    /// The manifest is inconsistent (duplicate name, limits above the engine's maximum, ...).
    #[error("plugin {plugin}: invalid manifest: {reason}")]
    Manifest { plugin: String, reason: String },
    /// The loader task panicked or was cancelled.
    #[error("plugin loader failed: {0}")]
    Loader(String),
}

impl Error {
    /// The plugin the error is about, when it is about one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Error::Compile { plugin, .. }
            | Error::Link { plugin, .. }
            | Error::Configure { plugin, .. }
            | Error::Manifest { plugin, .. } => Some(plugin),
            _ => None,
        }
    }
}
