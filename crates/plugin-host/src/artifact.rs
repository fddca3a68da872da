//! Precompiled plugin artifacts: wasmtime's native code behind a header that names the engine
//! settings it was compiled for, so that kedge loads only what it produced for these settings.
//!
//! Layout: `KEDGE-CWASM\n`, the fingerprint line (see [`super::engine::fingerprint`]) ending in
//! `\n`, then wasmtime's serialized component.

const MAGIC: &[u8] = b"KEDGE-CWASM\n";
/// Longest fingerprint line accepted; a real one is about 120 bytes.
const FINGERPRINT_MAX: usize = 1024;

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    /// Not something `kedge plugin compile` wrote.
    #[error("not a kedge plugin artifact (make one with `kedge plugin compile`)")]
    NotKedge,
    /// Compiled for another target or other engine settings.
    #[error(
        "compiled for other settings: the artifact has `{found}`, this kedge needs `{expected}` (compile it again with this kedge's `plugin compile --target`)"
    )]
    Settings {
        /// The artifact's fingerprint.
        found: String,
        /// This engine's fingerprint.
        expected: String,
    },
}

/// Wraps wasmtime's serialized component in the header for `fingerprint`.
#[cfg(any(feature = "compiler", test))]
pub fn wrap(fingerprint: &str, code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + fingerprint.len() + 1 + code.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(fingerprint.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(code);
    out
}

/// Checks the header against `fingerprint` and returns the serialized component behind it.
pub fn unwrap<'a>(fingerprint: &str, bytes: &'a [u8]) -> Result<&'a [u8], ArtifactError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(ArtifactError::NotKedge)?;
    let end = rest
        .iter()
        .take(FINGERPRINT_MAX)
        .position(|&b| b == b'\n')
        .ok_or(ArtifactError::NotKedge)?;
    let found = std::str::from_utf8(&rest[..end]).map_err(|_| ArtifactError::NotKedge)?;
    if found != fingerprint {
        return Err(ArtifactError::Settings {
            found: found.to_owned(),
            expected: fingerprint.to_owned(),
        });
    }
    Ok(&rest[end + 1..])
}

/// Whether `bytes` look like an artifact rather than a WebAssembly component.
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Where the compiled form of `component` is cached in `dir`: keyed by a hash of the component
/// and the engine settings, so a changed plugin or a new kedge compiles afresh. Only a build
/// that compiles components (feature `compiler`) caches them.
#[cfg(any(feature = "compiler", test))]
pub fn cache_path(
    dir: &std::path::Path,
    name: &str,
    fingerprint: &str,
    component: &[u8],
) -> std::path::PathBuf {
    use ring::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(fingerprint.as_bytes());
    ctx.update(b"\n");
    ctx.update(component);
    let hash = ctx.finish();
    let hex: String = hash.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("{name}-{hex}.cwasm"))
}

/// Whether `file_name` is a cache entry [`cache_path`] makes for plugin `name` (of any
/// version), and not one of a plugin whose name merely starts the same way.
#[cfg(any(feature = "compiler", test))]
pub fn is_cache_entry_of(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".cwasm"))
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_settings_and_foreign_files() {
        let a = wrap("settings one", b"\x7fELF code");
        assert!(is_artifact(&a));
        assert_eq!(unwrap("settings one", &a), Ok(&b"\x7fELF code"[..]));
        assert_eq!(
            unwrap("settings two", &a),
            Err(ArtifactError::Settings {
                found: "settings one".into(),
                expected: "settings two".into()
            })
        );
        assert_eq!(
            unwrap("x", b"\0asm\r\0\x01\0"),
            Err(ArtifactError::NotKedge)
        );
        assert_eq!(
            unwrap("x", b"KEDGE-CWASM\nno newline"),
            Err(ArtifactError::NotKedge)
        );
        assert_eq!(unwrap("x", b""), Err(ArtifactError::NotKedge));
    }

    #[test]
    fn cache_paths_change_with_the_component_and_the_settings() {
        let dir = std::path::Path::new("/cache");
        let p = cache_path(dir, "units", "s1", b"component");
        assert!(p.starts_with(dir));
        assert!(
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("units-")
        );
        assert_eq!(p, cache_path(dir, "units", "s1", b"component"));
        assert_ne!(p, cache_path(dir, "units", "s2", b"component"));
        assert_ne!(p, cache_path(dir, "units", "s1", b"component2"));
        let file = p.file_name().unwrap().to_str().unwrap();
        assert!(is_cache_entry_of(file, "units"));
        assert!(!is_cache_entry_of(file, "unit"));
        let longer = cache_path(dir, "units-v2", "s1", b"component");
        assert!(!is_cache_entry_of(
            longer.file_name().unwrap().to_str().unwrap(),
            "units"
        ));
        assert!(!is_cache_entry_of("units-.cwasm", "units"));
    }
}
