//! Tidy: checks that enforce Synod's architecture on the source tree itself.
//!
//! These run with the normal test command. Each check prints every violation as
//! `path:line: what is wrong` so that it can be fixed without hunting. The rules:
//!
//! 1. Every `.rs` file starts with a `//!` module doc.
//! 2. Protocol code (`node`, `clocks`, `quorum`, `membership`, `partitioning`, `consensus`, under
//!    `src/`, and every file of `examples/src`) does no I/O and stays deterministic: no
//!    `SystemTime::now`, `Instant::now`, `std::thread`, `std::net`, `std::fs`, and no `HashMap`
//!    or `HashSet` (their iteration order changes from run to run; use `BTreeMap`, `BTreeSet`
//!    or a sorted `Vec`). A file that is a driver says so with a line
//!    `// tidy: driver: <why it does I/O>` (a marker without its reason is a violation);
//!    `#[cfg(test)] mod ... { }` blocks are not protocol code and are skipped. In `examples`,
//!    where the drivers of the reference systems live (the process runtime, servers, clients,
//!    the `synod` program), a file is sans-I/O unless it is marked, so a new file is held to
//!    the rule until it says why it may not be; the state machines
//!    ([`EXAMPLES_STATE_MACHINES`]) may not be marked at all.
//! 3. Dependencies follow ARCHITECTURE.md's code map: library crates use only the chosen external crates
//!    (optional peer baselines aside), and Synod crates depend on each other only along the
//!    allowed edges.
//! 4. Every library crate has a `README.md` and the crates.io metadata a published crate
//!    needs.
//! 5. A type that holds a proof, a secret's digest or a secret ([`SECRET_TYPES`]) does not
//!    derive `PartialEq`: the derived comparison stops at the first byte that differs, which
//!    tells an attacker timing it how much of a guess was right. Such a type writes its own,
//!    comparing every byte, or has none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates whose `src/` is protocol code: no I/O, no hidden sources of nondeterminism.
const PROTOCOL_CRATES: &[&str] = &[
    "node",
    "clocks",
    "quorum",
    "membership",
    "partitioning",
    "consensus",
];

/// Where the `examples` crate's code lives: every file here is sans-I/O unless it is marked a
/// driver.
const EXAMPLES_SRC: &str = "examples/src";

/// The state machines of the reference systems, and the pure code they use: never drivers,
/// so a driver marker in one is itself a violation. The same code runs under the simulator
/// and as a process only while it does no I/O (a store layout written against
/// `synod_wal::Storage`, as the register store's is, reaches its disk only through that
/// trait, which the simulator implements too).
const EXAMPLES_STATE_MACHINES: &[&str] = &[
    "examples/src/consistent_core/node.rs",
    "examples/src/consistent_core/kv.rs",
    "examples/src/consistent_core/commands.rs",
    "examples/src/register/machine.rs",
    "examples/src/register/commands.rs",
    "examples/src/register/store.rs",
    "examples/src/leaderless/machine.rs",
    "examples/src/leaderless/store.rs",
    "examples/src/resp/codec.rs",
];

/// Types holding a proof, a secret's digest or a secret (a client's password), with the file
/// each is in: their equality, if any, must look at every byte (rule 5).
const SECRET_TYPES: &[(&str, &str)] = &[
    ("transport/src/handshake.rs", "Proof"),
    ("examples/src/runtime/auth.rs", "PasswordHash"),
    ("examples/src/runtime/auth.rs", "PeerSecret"),
    ("examples/src/resp/client.rs", "Credentials"),
];

/// The marker of a driver, followed by `: ` and why the file does I/O.
const DRIVER_MARKER: &str = "// tidy: driver";

/// Library crates: everything but `examples`.
const LIBRARY_CRATES: &[&str] = &[
    "node",
    "wal",
    "clocks",
    "quorum",
    "membership",
    "partitioning",
    "consensus",
    "transport",
    "sim",
];

/// External crates a library may depend on (non-optional `[dependencies]`).
const ALLOWED_EXTERNAL: &[&str] = &["bytes", "crc32fast", "parking_lot", "serde", "postcard"];

/// The Synod crates each library crate may depend on (`[dependencies]`, optional or not).
const ALLOWED_SYNOD_EDGES: &[(&str, &[&str])] = &[
    ("node", &[]),
    ("wal", &["node"]),
    ("clocks", &["node"]),
    ("transport", &["node"]),
    ("quorum", &["node", "clocks"]),
    // transport only behind its optional `transport` feature: the driver over TCP (`net`).
    ("membership", &["node", "clocks", "transport"]),
    ("partitioning", &["node", "clocks"]),
    ("consensus", &["node", "clocks", "quorum", "wal"]),
    ("sim", &["node", "wal", "clocks"]),
];

/// Forbidden in protocol code, with the reason printed next to a violation.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "SystemTime::now",
        "reads the OS clock; take `now` as an argument",
    ),
    (
        "Instant::now",
        "reads the OS clock; take `now` as an argument",
    ),
    (
        "std::thread",
        "spawns or sleeps; protocol code is driven by its caller",
    ),
    ("thread::sleep", "sleeps; return how long to wait instead"),
    (
        "std::net",
        "opens sockets; emit messages as effects instead",
    ),
    (
        "std::fs",
        "touches files; emit persistence requests as effects instead",
    ),
    (
        "HashMap",
        "iteration order is random; use BTreeMap or a sorted Vec",
    ),
    (
        "HashSet",
        "iteration order is random; use BTreeSet or a sorted Vec",
    ),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Rule 1: the first line of a Rust file is a `//!` module doc.
fn check_module_doc(path: &str, text: &str) -> Vec<String> {
    match text.lines().next() {
        Some(first) if first.starts_with("//!") => Vec::new(),
        _ => vec![format!(
            "{path}:1: file does not start with a `//!` module doc"
        )],
    }
}

/// The code part of a line: without a trailing `//` comment and without string literals,
/// so that prose which names a forbidden item is not a violation.
fn code_of(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

fn brace_delta(code: &str) -> i64 {
    code.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Whether `text` is marked a driver: `Ok(true)` for a `// tidy: driver: <reason>` line,
/// `Err` with the violation for a marker that gives no reason.
fn driver_marker(path: &str, text: &str) -> Result<bool, String> {
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix(DRIVER_MARKER) else {
            continue;
        };
        let reason = rest.strip_prefix(':').map(str::trim).unwrap_or("");
        if reason.is_empty() {
            return Err(format!(
                "{path}:{}: a driver marker says why the file does I/O: `{DRIVER_MARKER}: <reason>`",
                i + 1
            ));
        }
        return Ok(true);
    }
    Ok(false)
}

/// Rule 2 for a file of `examples/src`: sans-I/O unless marked a driver, and never a driver if
/// it is one of the state machines.
fn check_examples_code(path: &str, text: &str) -> Vec<String> {
    if EXAMPLES_STATE_MACHINES.contains(&path) && !matches!(driver_marker(path, text), Ok(false)) {
        return vec![format!(
            "{path}: a state machine of a reference system is sans-I/O and may not be marked a driver; move the I/O to a driver"
        )];
    }
    check_no_io(path, text, "sans-I/O code")
}

/// Rule 2: protocol code does no I/O and has no nondeterministic collections.
fn check_protocol_code(path: &str, text: &str) -> Vec<String> {
    check_no_io(path, text, "protocol code")
}

/// Rule 2 for `what` (protocol code, or sans-I/O code of `examples`).
fn check_no_io(path: &str, text: &str, what: &str) -> Vec<String> {
    match driver_marker(path, text) {
        Ok(true) => return Vec::new(),
        Ok(false) => {}
        Err(violation) => return vec![violation],
    }
    let mut violations = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim();
        // Skip `#[cfg(test)] mod name { ... }` blocks: tests may use threads and clocks.
        if trimmed == "#[cfg(test)]" {
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            if next.starts_with("mod ")
                || next.starts_with("pub mod ")
                || next.starts_with("pub(crate) mod ")
            {
                if next.ends_with(';') {
                    i += 2;
                    continue;
                }
                let mut depth = 0;
                let mut j = i + 1;
                while j < lines.len() {
                    depth += brace_delta(&code_of(lines[j]));
                    j += 1;
                    if depth <= 0 && lines[j - 1].contains('}') {
                        break;
                    }
                }
                i = j;
                continue;
            }
        }
        if trimmed.starts_with("//") {
            i += 1;
            continue;
        }
        let code = code_of(lines[i]);
        for (pattern, why) in FORBIDDEN {
            if code.contains(pattern) {
                violations.push(format!("{path}:{}: `{pattern}` in {what}: {why}", i + 1));
            }
        }
        // Grouped imports such as `use std::{fs, net::TcpStream};`.
        if let Some(group) = code.split("std::{").nth(1) {
            for module in ["fs", "net", "thread"] {
                if has_word(group, module) {
                    violations.push(format!(
                        "{path}:{}: `std::{module}` imported in {what}: it does no I/O",
                        i + 1
                    ));
                }
            }
        }
        i += 1;
    }
    violations
}

/// The `name = ...` entries of one `[section]` of a Cargo.toml, with whether each is
/// optional. A tiny parser for the shapes this workspace uses.
fn toml_section_entries(manifest: &str, section: &str) -> Vec<(String, bool)> {
    let mut entries = Vec::new();
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
            continue;
        }
        if !in_section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if !key.is_empty() {
            let optional = line.replace(' ', "").contains("optional=true");
            entries.push((key, optional));
        }
    }
    entries
}

/// Rule 3: library dependencies and the Synod crate graph.
fn check_dependencies(krate: &str, manifest: &str) -> Vec<String> {
    let path = format!("{krate}/Cargo.toml");
    let allowed_synod: &[&str] = ALLOWED_SYNOD_EDGES
        .iter()
        .find(|(c, _)| *c == krate)
        .map(|(_, deps)| *deps)
        .unwrap_or(&[]);
    let mut violations = Vec::new();
    for (dep, optional) in toml_section_entries(manifest, "dependencies") {
        if let Some(synod) = dep.strip_prefix("synod-") {
            if !allowed_synod.contains(&synod) {
                violations.push(format!(
                    "{path}: depends on `{dep}`, but `{krate}` may depend only on {allowed_synod:?} (ARCHITECTURE.md, Code map)"
                ));
            }
        } else if !optional && !ALLOWED_EXTERNAL.contains(&dep.as_str()) {
            violations.push(format!(
                "{path}: depends on `{dep}`; library crates use only {ALLOWED_EXTERNAL:?} (peer baselines must be optional)"
            ));
        }
    }
    violations
}

/// Rule 4: what a crate needs to be published.
fn check_package_metadata(krate: &str, manifest: &str, root: &Path) -> Vec<String> {
    let path = format!("{krate}/Cargo.toml");
    let mut violations = Vec::new();
    for field in [
        "description",
        "keywords",
        "categories",
        "readme",
        "license.workspace",
        "repository.workspace",
    ] {
        if !manifest.lines().any(|l| l.trim_start().starts_with(field)) {
            violations.push(format!("{path}: missing `{field}`, which crates.io needs"));
        }
    }
    if !root.join(krate).join("README.md").is_file() {
        violations.push(format!("{krate}/README.md: missing"));
    }
    violations
}

/// Violations of rule 5 in `text` (the file at `path`): a `derive` naming `PartialEq` on the
/// struct `name`, or no such struct at all (a renamed type must be renamed here too).
fn check_secret_type(path: &str, text: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let declared = |line: &str| {
        let code = code_of(line);
        let code = code.trim_start();
        let code = code.strip_prefix("pub ").unwrap_or(code);
        code.strip_prefix("struct ").is_some_and(|rest| {
            rest.strip_prefix(name)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    };
    let Some(at) = lines.iter().position(|l| declared(l)) else {
        return vec![format!("{path}: no `struct {name}` (rule 5 names it)")];
    };
    let mut violations = Vec::new();
    for (i, line) in lines[..at].iter().enumerate().rev() {
        let trimmed = line.trim_start();
        if !(trimmed.starts_with("#[") || trimmed.starts_with("///")) {
            break;
        }
        if trimmed.starts_with("#[derive") && has_word(trimmed, "PartialEq") {
            violations.push(format!(
                "{path}:{}: {name} derives PartialEq, which stops at the first byte that differs; compare every byte instead",
                i + 1
            ));
        }
    }
    violations
}

fn report(rule: &str, violations: &[String]) {
    if violations.is_empty() {
        return;
    }
    let mut message = format!("tidy: {} violation(s) of {rule}:\n", violations.len());
    for v in violations {
        let _ = writeln!(message, "  {v}");
    }
    panic!("{message}");
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "tidy found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    let mut violations = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("readable source file");
        violations.extend(check_module_doc(&relative(file), &text));
    }
    report("rule 1 (module docs)", &violations);
}

#[test]
fn protocol_code_does_no_io_and_is_deterministic() {
    let root = workspace_root();
    let mut violations = Vec::new();
    let mut checked = 0;
    for krate in PROTOCOL_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for file in &files {
            let text = fs::read_to_string(file).expect("readable source file");
            violations.extend(check_protocol_code(&relative(file), &text));
            checked += 1;
        }
    }
    assert!(
        checked >= PROTOCOL_CRATES.len(),
        "tidy checked only {checked} protocol files"
    );
    report("rule 2 (protocol code does no I/O)", &violations);
}

#[test]
fn examples_code_does_no_io_unless_it_is_a_driver() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join(EXAMPLES_SRC), &mut files);
    let paths: Vec<String> = files.iter().map(|f| relative(f)).collect();
    for machine in EXAMPLES_STATE_MACHINES {
        assert!(
            paths.iter().any(|p| p == machine),
            "tidy: {machine} is listed as a state machine but does not exist"
        );
    }
    let mut violations = Vec::new();
    let mut sans_io = 0;
    for (file, path) in files.iter().zip(&paths) {
        let text = fs::read_to_string(file).expect("readable source file");
        violations.extend(check_examples_code(path, &text));
        sans_io += usize::from(driver_marker(path, &text) == Ok(false));
    }
    assert!(
        sans_io >= EXAMPLES_STATE_MACHINES.len(),
        "tidy checked only {sans_io} sans-I/O files in {EXAMPLES_SRC}"
    );
    report(
        "rule 2 (examples code does no I/O unless a driver)",
        &violations,
    );
}

#[test]
fn dependencies_follow_the_design() {
    let root = workspace_root();
    let mut violations = Vec::new();
    for krate in LIBRARY_CRATES {
        let manifest =
            fs::read_to_string(root.join(krate).join("Cargo.toml")).expect("crate manifest");
        violations.extend(check_dependencies(krate, &manifest));
        violations.extend(check_package_metadata(krate, &manifest, &root));
    }
    report("rules 3 and 4 (dependencies and metadata)", &violations);
}

#[test]
fn secrets_compare_every_byte() {
    let root = workspace_root();
    let mut violations = Vec::new();
    for (path, name) in SECRET_TYPES {
        let text = fs::read_to_string(root.join(path)).expect("readable source file");
        violations.extend(check_secret_type(path, &text, name));
    }
    report("rule 5 (secrets compare every byte)", &violations);
}

#[test]
fn secret_check_flags_a_derived_comparison_and_a_missing_type() {
    let derived =
        "/// A proof.\n#[derive(Clone, Copy, PartialEq, Eq)]\npub struct Proof(pub [u8; 32]);\n";
    assert_eq!(check_secret_type("a.rs", derived, "Proof").len(), 1);
    let written =
        "#[derive(Clone, Copy)]\npub struct Proof(pub [u8; 32]);\nimpl PartialEq for Proof {}\n";
    assert!(check_secret_type("a.rs", written, "Proof").is_empty());
    // Another type deriving it, or a longer name, is not this one.
    let other = "#[derive(PartialEq)]\nstruct ProofOfWork;\n#[derive(Clone)]\nstruct Proof;\n";
    assert!(check_secret_type("a.rs", other, "Proof").is_empty());
    assert_eq!(check_secret_type("a.rs", "struct Other;", "Proof").len(), 1);
}

#[test]
fn workspace_lists_every_crate() {
    let root = workspace_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("workspace manifest");
    let mut missing = BTreeMap::new();
    for krate in LIBRARY_CRATES.iter().chain(&["examples"]) {
        if !manifest.contains(&format!("\"{krate}\"")) {
            missing.insert(*krate, "not a workspace member");
        }
    }
    assert!(
        missing.is_empty(),
        "tidy: crates missing from the workspace: {missing:?}"
    );
}

// The checks themselves must be able to fail: each is run here on a known-bad input.

#[test]
fn protocol_check_flags_clock_reads_threads_and_hash_maps() {
    let bad = "//! A protocol.\nuse std::collections::HashMap;\nfn f() { let _ = std::time::Instant::now(); }\nuse std::{fs, thread};\n";
    let violations = check_protocol_code("x/src/lib.rs", bad);
    let joined = violations.join("\n");
    assert!(joined.contains("x/src/lib.rs:2: `HashMap`"), "{joined}");
    assert!(
        joined.contains("x/src/lib.rs:3: `Instant::now`"),
        "{joined}"
    );
    assert!(
        joined.contains("x/src/lib.rs:4: `std::fs` imported"),
        "{joined}"
    );
    assert!(
        joined.contains("x/src/lib.rs:4: `std::thread` imported"),
        "{joined}"
    );
}

#[test]
fn protocol_check_ignores_comments_strings_tests_and_drivers() {
    let fine = "//! Never calls Instant::now.\n// Not HashMap either.\nconst S: &str = \"std::fs\";\n#[cfg(test)]\nmod tests {\n    fn t() { std::thread::spawn(|| {}); }\n}\nfn g() {}\n";
    assert_eq!(
        check_protocol_code("x/src/lib.rs", fine),
        Vec::<String>::new()
    );
    let after_tests = "//! Doc.\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\nfn g() { let _ = std::time::SystemTime::now(); }\n";
    assert_eq!(check_protocol_code("x/src/lib.rs", after_tests).len(), 1);
    let driver = "//! A driver.\n// tidy: driver: owns the socket.\nuse std::net::TcpStream;\n";
    assert_eq!(
        check_protocol_code("x/src/driver.rs", driver),
        Vec::<String>::new()
    );
}

#[test]
fn examples_check_flags_io_in_a_sans_io_file_and_a_marked_state_machine() {
    // A file I/O slipped into the key-value state machine.
    let kv = "//! The state machine.\nuse std::collections::BTreeMap;\n\nfn load() -> Vec<u8> {\n    std::fs::read(\"kv.snap\").unwrap_or_default()\n}\n";
    let violations = check_examples_code("examples/src/consistent_core/kv.rs", kv);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].starts_with("examples/src/consistent_core/kv.rs:5: `std::fs`"),
        "{violations:?}"
    );
    // A new file is held to the rule too, until it says why it is a driver.
    let new = "//! A helper.\nuse std::net::TcpStream;\n";
    assert_eq!(check_examples_code("examples/src/new.rs", new).len(), 1);
    let driver = "//! A helper.\n// tidy: driver: dials the nodes.\nuse std::net::TcpStream;\n";
    assert_eq!(
        check_examples_code("examples/src/new.rs", driver),
        Vec::<String>::new()
    );
    // A state machine cannot be let off by marking it.
    let marked = kv.replacen('\n', "\n// tidy: driver: reads its snapshot.\n", 1);
    let violations = check_examples_code("examples/src/consistent_core/kv.rs", &marked);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("may not be marked a driver"),
        "{violations:?}"
    );
}

#[test]
fn a_driver_marker_without_a_reason_is_a_violation() {
    let bare = "//! A driver.\n// tidy: driver\nuse std::net::TcpStream;\n";
    let violations = check_protocol_code("x/src/driver.rs", bare);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].starts_with("x/src/driver.rs:2: a driver marker says why"),
        "{violations:?}"
    );
    let empty = "//! A driver.\n// tidy: driver: \nuse std::net::TcpStream;\n";
    assert_eq!(check_protocol_code("x/src/driver.rs", empty).len(), 1);
}

#[test]
fn module_doc_check_flags_a_file_without_one() {
    assert_eq!(
        check_module_doc("a.rs", "//! Doc.\nfn f() {}\n"),
        Vec::<String>::new()
    );
    assert_eq!(check_module_doc("a.rs", "use std::fs;\n").len(), 1);
    assert_eq!(check_module_doc("a.rs", "").len(), 1);
}

#[test]
fn dependency_check_flags_forbidden_edges_and_crates() {
    let manifest = "[package]\nname = \"synod-clocks\"\n\n[dependencies]\nserde.workspace = true\nsynod-consensus.workspace = true\ntokio = \"1\"\nokaywal = { version = \"0.3\", optional = true }\n\n[dev-dependencies]\nproptest.workspace = true\n";
    let violations = check_dependencies("clocks", manifest);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("synod-consensus"), "{violations:?}");
    assert!(violations[1].contains("tokio"), "{violations:?}");
}
