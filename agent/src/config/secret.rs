//! Secrets that may be written inline, or kept out of the config file in an env var or a file.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A secret value: `"x"`, `{ env = "NAME" }` or `{ file = "/run/secrets/name" }`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config file itself.
    Inline(String),
    /// Read from an environment variable when resolved.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// Read from a file (e.g. a container secret) when resolved.
    File {
        /// Path of the file holding the secret.
        file: PathBuf,
    },
}

/// Why a [`Secret`] could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The environment variable is set but empty.
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    /// The environment variable does not hold valid Unicode.
    #[error("environment variable {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    /// The secret file could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    FileRead {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The secret file is empty.
    #[error("secret file {} is empty", .0.display())]
    FileEmpty(PathBuf),
}

impl Secret {
    /// Returns the secret's value, reading the env var or file it refers to.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::Env { env } => match std::env::var(env) {
                Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty(env.clone())),
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing(env.clone())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(SecretError::EnvNotUnicode(env.clone()))
                }
            },
            Self::File { file } => {
                let mut value =
                    std::fs::read_to_string(file).map_err(|source| SecretError::FileRead {
                        path: file.clone(),
                        source,
                    })?;
                // Editors and `echo` append a newline that is not part of the secret.
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                if value.is_empty() {
                    return Err(SecretError::FileEmpty(file.clone()));
                }
                Ok(value)
            }
        }
    }
}

impl Secret {
    /// A warning when the secret is a file that group or others may read or write: whoever
    /// can read it can log in as kedge. `None` for inline and env secrets, and for a file that
    /// cannot be inspected (resolving it reports that).
    pub fn exposure(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let Self::File { file } = self else {
            return None;
        };
        let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "secret file {} is open to group or others (mode {mode:03o}); chmod 600 it",
                file.display()
            )
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Self::Env { env } => write!(f, "Secret(env {env:?})"),
            Self::File { file } => write!(f, "Secret(file {:?})", file.display()),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("inline (redacted)"),
            Self::Env { env } => write!(f, "from environment variable {env}"),
            Self::File { file } => write!(f, "from file {}", file.display()),
        }
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { env = "VAR" } or { file = "/path" }"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::Inline(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        const HOW: &str = r#"write either { env = "VAR" } or { file = "/path" }"#;
        let mut secret = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: String = map.next_value()?;
            let parsed = match key.as_str() {
                "env" if value.is_empty() => {
                    return Err(de::Error::custom("env: the variable name is empty"));
                }
                "file" if value.is_empty() => {
                    return Err(de::Error::custom("file: the path is empty"));
                }
                "env" => Secret::Env { env: value },
                "file" => Secret::File { file: value.into() },
                other => {
                    return Err(de::Error::custom(format_args!(
                        "unknown key {other:?} in secret; {HOW}"
                    )));
                }
            };
            if secret.replace(parsed).is_some() {
                return Err(de::Error::custom(format_args!(
                    "a secret has exactly one source; {HOW}"
                )));
            }
        }
        secret.ok_or_else(|| de::Error::custom(format_args!("empty secret table; {HOW}")))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_file_open_to_others_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        let secret = super::Secret::File { file: path.clone() };
        for (mode, warned) in [
            (0o666, true),
            (0o640, true),
            (0o604, true),
            (0o600, false),
            (0o400, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = secret.exposure();
            assert_eq!(got.is_some(), warned, "mode {mode:o}: {got:?}");
            if let Some(w) = got {
                assert!(w.contains(&format!("mode {mode:03o}")), "{w}");
            }
        }
        assert_eq!(super::Secret::Inline("x".into()).exposure(), None);
    }

    use super::*;

    #[test]
    fn debug_never_shows_inline_value() {
        let secret = Secret::Inline("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(inline, redacted)");
        assert!(!format!("{secret}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
    }

    #[test]
    fn resolves_inline_and_file() {
        assert_eq!(Secret::Inline("x".into()).resolve().ok(), Some("x".into()));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n\n").expect("write");
        let secret = Secret::File { file: path.clone() };
        assert_eq!(secret.resolve().ok(), Some("s3cret\n".into()));

        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(secret.resolve(), Err(SecretError::FileEmpty(_))));

        let missing = Secret::File {
            file: dir.path().join("absent"),
        };
        let err = missing.resolve().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn resolves_env() {
        // PATH is set in every sane test environment; setting variables is unsafe in 2024.
        let path = Secret::Env { env: "PATH".into() };
        assert!(path.resolve().is_ok());

        let missing = Secret::Env {
            env: "KEDGE_TEST_SURELY_UNSET_VARIABLE".into(),
        };
        let err = missing.resolve().map(|_| ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable KEDGE_TEST_SURELY_UNSET_VARIABLE is not set"
        );
    }
}
