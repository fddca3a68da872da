//! `kedge plugin new`: a plugin project outside kedge's repository, from the templates in
//! `agent/templates/plugin/`, with the WIT contract (and for Rust the SDK) of this kedge's
//! build, so that it builds with one command wherever it is written.

use std::path::{Path, PathBuf};

/// The languages `kedge plugin new` has a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with kedge's SDK.
    Rust,
    /// C against the bindings `wit-bindgen c` generates.
    C,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
    /// Go (wasip1, c-shared) against the bindings `wit-bindgen go` generates.
    Go,
}

impl Lang {
    /// Every language, with the word `--lang` takes for it.
    pub const ALL: [(&'static str, Lang); 5] = [
        ("rust", Lang::Rust),
        ("c", Lang::C),
        ("python", Lang::Python),
        ("js", Lang::Js),
        ("go", Lang::Go),
    ];

    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::Go => "Go",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        Lang::ALL
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, lang)| *lang)
            .ok_or_else(|| {
                let words: Vec<&str> = Lang::ALL.iter().map(|(w, _)| *w).collect();
                format!(
                    "no template for `{word}`; expected one of {}",
                    words.join(", ")
                )
            })
    }
}

/// Why a project could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a package and a file.
    #[error(
        "plugin name `{0}`: use lowercase letters, digits and `-`, starting with a letter (at most 64)"
    )]
    Name(String),
    /// The directory is there already.
    #[error("{0} exists already: choose another name or --dir")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// What could not be written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One file of a project: its path inside the project and its text. Scripts (`*.sh`) are
/// written executable.
struct File {
    path: &'static str,
    text: &'static str,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File { path, text }
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../templates/plugin/", $path))
    };
}

/// What every project has: the contract, the test script, sample events and a README.
const COMMON: &[File] = &[
    file("wit/transform.wit", include_str!("../../wit/transform.wit")),
    file("test.sh", template!("common/test.sh")),
    file("input.jsonl", template!("common/input.jsonl")),
    file("README.md", template!("common/README.md")),
];

const RUST: &[File] = &[
    file("Cargo.toml", template!("rust/Cargo.toml")),
    file("src/lib.rs", template!("rust/src/lib.rs")),
    file("build.sh", template!("rust/build.sh")),
    file("test.args", template!("rust/test.args")),
    file("expected.jsonl", template!("rust/expected.jsonl")),
    file(".gitignore", template!("rust/.gitignore")),
    // The SDK, from plugins/sdk: `../../wit` from its directory is the project's wit/.
    file(
        "vendor/kedge-plugin/Cargo.toml",
        template!("rust/vendor-Cargo.toml"),
    ),
    file(
        "vendor/kedge-plugin/src/lib.rs",
        include_str!("../../plugins/sdk/src/lib.rs"),
    ),
    file(
        "vendor/kedge-plugin/src/alloc.rs",
        include_str!("../../plugins/sdk/src/alloc.rs"),
    ),
    file(
        "vendor/kedge-plugin/src/config.rs",
        include_str!("../../plugins/sdk/src/config.rs"),
    ),
    file(
        "vendor/kedge-plugin/src/error.rs",
        include_str!("../../plugins/sdk/src/error.rs"),
    ),
    file(
        "vendor/kedge-plugin/src/json.rs",
        include_str!("../../plugins/sdk/src/json.rs"),
    ),
    file(
        "vendor/kedge-plugin/src/output.rs",
        include_str!("../../plugins/sdk/src/output.rs"),
    ),
];

const C: &[File] = &[
    file("plugin.c", template!("c/plugin.c")),
    file("build.sh", template!("c/build.sh")),
    file("test.args", template!("c/test.args")),
    file("expected.jsonl", template!("c/expected.jsonl")),
    file(".gitignore", template!("c/.gitignore")),
];

const JS: &[File] = &[
    file("plugin.js", template!("js/plugin.js")),
    file("componentize.mjs", template!("js/componentize.mjs")),
    file("package.json", template!("js/package.json")),
    file("build.sh", template!("js/build.sh")),
    file("test.args", template!("js/test.args")),
    file("expected.jsonl", template!("js/expected.jsonl")),
    file(".gitignore", template!("js/.gitignore")),
];

const GO: &[File] = &[
    file(
        "export_wit_world/plugin.go",
        template!("go/export_wit_world/plugin.go"),
    ),
    file("build.sh", template!("go/build.sh")),
    file("test.args", template!("go/test.args")),
    file("expected.jsonl", template!("go/expected.jsonl")),
    file(".gitignore", template!("go/.gitignore")),
];

const PYTHON: &[File] = &[
    file("app.py", template!("python/app.py")),
    file("kedge.py", template!("python/kedge.py")),
    file("build.sh", template!("python/build.sh")),
    file("test.args", template!("python/test.args")),
    file("expected.jsonl", template!("python/expected.jsonl")),
    file(".gitignore", template!("python/.gitignore")),
];

/// Whether `name` can name the plugin's package, its component file and its config section.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_owned()))
    }
}

/// The project's files, with `{{name}}` (and the other placeholders) filled in.
fn render(name: &str, lang: Lang) -> Vec<(&'static str, String, bool)> {
    let own = match lang {
        Lang::Rust => RUST,
        Lang::C => C,
        Lang::Python => PYTHON,
        Lang::Js => JS,
        Lang::Go => GO,
    };
    let memory = match lang {
        Lang::Python => "memory = \"64MiB\"   # the component bundles CPython\n",
        Lang::Js => "memory = \"64MiB\"   # the component bundles a JavaScript engine\n",
        Lang::Rust | Lang::C | Lang::Go => "",
    };
    COMMON
        .iter()
        .chain(own)
        .map(|f| {
            let text = f
                .text
                .replace("{{name}}", name)
                .replace("{{crate}}", &name.replace('-', "_"))
                .replace("{{language}}", lang.name())
                .replace("{{memory}}", memory);
            (f.path, text, f.path.ends_with(".sh"))
        })
        .collect()
}

/// Writes a new project for plugin `name` in `lang` into `dir`, which must not exist; returns
/// the files written.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<Vec<PathBuf>, ScaffoldError> {
    use std::os::unix::fs::PermissionsExt;
    check_name(name)?;
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let mut written = Vec::new();
    for (path, text, executable) in render(name, lang) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        if executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_a_package_and_a_file() {
        for ok in ["units", "lab-router", "t2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Units",
            "2t",
            "a_b",
            "a/b",
            "../x",
            "x-",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_scripts_are_executable() {
        for (_, lang) in Lang::ALL {
            let files = render("lab-router", lang);
            for (path, text, executable) in &files {
                assert!(
                    !text.contains("{{"),
                    "{lang:?} {path}: a placeholder is left"
                );
                assert_eq!(*executable, path.ends_with(".sh"), "{path}");
            }
            let has = |p: &str| files.iter().any(|(path, ..)| *path == p);
            for p in [
                "wit/transform.wit",
                "build.sh",
                "test.sh",
                "input.jsonl",
                "expected.jsonl",
            ] {
                assert!(has(p), "{lang:?} lacks {p}");
            }
        }
        let rust = render("lab-router", Lang::Rust);
        let build = &rust.iter().find(|(p, ..)| *p == "build.sh").unwrap().1;
        assert!(build.contains("release/lab_router.wasm"), "{build}");
    }

    #[test]
    fn a_project_is_not_written_over_an_existing_directory() {
        let dir = std::env::temp_dir().join(format!("kedge-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            create(&dir, "x", Lang::C),
            Err(ScaffoldError::Exists(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let written = create(&dir, "x", Lang::C).unwrap();
        assert!(written.iter().all(|p| p.starts_with(&dir)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The Python template's helpers, run by the machine's python3 against stand-ins for the
    /// generated types (which exist only inside a component).
    #[test]
    fn the_python_helpers_do_what_their_page_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kedge.py"), template!("python/kedge.py")).unwrap();
        std::fs::create_dir_all(dir.path().join("wit_world/imports")).unwrap();
        std::fs::write(dir.path().join("wit_world/__init__.py"), "").unwrap();
        std::fs::write(
            dir.path().join("wit_world/imports/types.py"),
            r#"from collections import namedtuple
Header = namedtuple("Header", "name value")
Event = namedtuple("Event", "key value headers timestamp_ms")
Output = namedtuple("Output", "topic key value headers timestamp_ms")
def Verdict_Keep(): return ("keep",)
def Verdict_Drop(): return ("drop",)
def Verdict_Route(t): return ("route", t)
def Verdict_Replace(o): return ("replace", o)
def Verdict_Fail(r): return ("fail", r)
"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("wit_world/imports/__init__.py"), "").unwrap();
        let script = r#"
import kedge
from wit_world.imports.types import Event, Header
e = Event(b"k", b"v", [Header("a", b"1"), Header("b", b"2"), Header("a", b"3")], 7)
def handle(ev):
    if ev.value == b"bad": raise kedge.Fail("bad one")
    if ev.value == b"x": return kedge.drop()
    return None
vs = kedge.each([e, e._replace(value=b"bad"), e._replace(value=b"x")], handle)
assert vs == [("keep",), ("fail", "bad one"), ("drop",)], vs
o = kedge.output_from(e, value=b"w")
assert (o.topic, o.key, o.value, o.timestamp_ms) == (None, b"k", b"w", 7), o
assert o.headers == e.headers and o.headers is not e.headers
assert kedge.with_header(e.headers, "a", "9") == [Header("a", b"9"), Header("b", b"2")]
assert kedge.with_header([], "c", b"1") == [Header("c", b"1")]
assert kedge.duration("250ms") == 0.25 and kedge.duration("1.5m") == 90
for bad in ["10", "-1s", "xs", "1d"]:
    try:
        kedge.duration(bad)
        raise SystemExit("accepted " + bad)
    except ValueError:
        pass
print("ok")
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn unknown_languages_say_which_there_are() {
        let e = "cobol".parse::<Lang>().unwrap_err();
        assert!(e.contains("one of rust, c, python, js, go"), "{e}");
        assert_eq!("python".parse::<Lang>(), Ok(Lang::Python));
    }
}
