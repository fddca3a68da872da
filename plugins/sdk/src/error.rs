//! The error of a whole call: the WIT `plugin-error` record itself, with constructors.

/// A failure of a whole `init`, `process` or `tick` call, as the host receives it.
///
/// `init` failing refuses the plugin; `process` failing fails every event of the batch. To
/// reject a single event, return [`Verdict::Fail`](crate::Verdict::Fail) for it instead.
pub use crate::bindings::transform::kedge::transform::types::PluginError as Error;

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

impl From<crate::json::Error> for Error {
    fn from(error: crate::json::Error) -> Self {
        Error::new(error.to_string())
    }
}
