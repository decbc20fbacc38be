//! The documentation's commands and keys, held to what is run and what exists: every shell
//! block in `docs/` says where it is run (`sh run-by=FILE`: a test or CI script that runs
//! it) or that it needs a cluster (`sh cluster`), and `docs/config.md` has a row for every
//! key of the embedded default.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files
}

/// A fenced block: its info string, its first line number, its lines.
struct Block {
    info: String,
    line: usize,
    lines: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => out.push(block),
                None => {
                    open = Some(Block {
                        info: fence.trim().to_owned(),
                        line: i + 1,
                        lines: Vec::new(),
                    });
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.lines.push(line.to_owned());
        }
    }
    out
}

/// The commands of a shell block: one per logical line (continuations joined), without
/// comments, shell keywords or `sudo`.
fn commands(block: &Block) -> Vec<Vec<String>> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in &block.lines {
        let line = line.trim();
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .iter()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        // A loop's header and end are not commands; its body is.
        .filter(|l| !l.is_empty() && !l.starts_with("for ") && l != "done")
        .map(|l| {
            l.split_whitespace()
                .map(str::to_owned)
                .skip_while(|w| {
                    ["sudo", "for", "do", "done", "|"].contains(&w.as_str()) || w.contains('=')
                })
                .collect::<Vec<String>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}

#[test]
fn every_shell_command_in_docs_is_run_by_a_test_or_marked_as_needing_a_cluster() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in docs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for block in blocks(&text) {
            let mut info = block.info.split_whitespace();
            if !matches!(info.next(), Some("sh" | "bash" | "shell" | "console")) {
                continue;
            }
            let at = format!("{name}:{}", block.line);
            match info.next() {
                Some("cluster") => {}
                Some(tag) if tag.starts_with("run-by=") => {
                    let runner = root().join(&tag["run-by=".len()..]);
                    let Ok(source) = std::fs::read_to_string(&runner) else {
                        problems.push(format!("{at}: {tag}: no such file"));
                        continue;
                    };
                    for words in commands(&block) {
                        checked += 1;
                        let program = words[0].trim_start_matches('/');
                        if !source.contains(program) {
                            problems.push(format!("{at}: `{program}` is not in {tag}"));
                        }
                        // nodedns's own options must be ones the runner passes.
                        if program == "nodedns" {
                            for option in words.iter().filter(|w| w.starts_with("--")) {
                                if !source.contains(option.as_str()) {
                                    problems.push(format!("{at}: `{option}` is not in {tag}"));
                                }
                            }
                        }
                    }
                }
                _ => problems.push(format!(
                    "{at}: a shell block must say `sh run-by=FILE` or `sh cluster`"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        checked > 5,
        "only {checked} commands found: is the parser broken?"
    );
}

/// Keys of the embedded default as `section.key`, commented-out ones included.
fn default_keys() -> Vec<(String, String)> {
    let text = nodedns::config::DEFAULT_TOML;
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or(line).trim();
        if body.starts_with('[') && body.ends_with(']') && !body.contains(' ') {
            section = body.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.push((section.clone(), key.to_owned()));
        }
    }
    keys
}

#[test]
fn config_docs_have_a_row_for_every_key_of_the_embedded_default() {
    let docs = std::fs::read_to_string(root().join("docs/config.md")).unwrap();
    let keys = default_keys();
    assert!(keys.len() > 20, "{keys:?}");
    let mut missing = Vec::new();
    for (section, key) in keys {
        // The table of the key's own section: from its heading to the next one.
        let table_heading = format!("## `[{section}]`");
        let array_heading = format!("## `[[{section}]]`");
        let found = docs
            .find(&table_heading)
            .map(|at| (at, table_heading.len()))
            .or_else(|| {
                docs.find(&array_heading)
                    .map(|at| (at, array_heading.len()))
            });
        let Some((start, len)) = found else {
            missing.push(format!("section [{section}]"));
            continue;
        };
        let rest = &docs[start + len..];
        let table = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        if !table.contains(&format!("\n| `{key}` |")) {
            missing.push(format!("{section}.{key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/config.md lacks rows for {missing:?}"
    );
}
