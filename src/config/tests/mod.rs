//! Whole-config tests: the fixtures under `tests/fixtures/config/` and the embedded default
//! (`fixtures`), rules checked on small TOML texts (`rules`), and the range of every number,
//! duration and upstream address (`bounds`).
#![allow(clippy::unwrap_used)]

mod bounds;
mod fixtures;
mod rules;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Diagnostic, parse_str};

pub fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(sub)
}

pub fn toml_files(sub: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures(sub))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

pub fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub const ZONE: &str = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:5300\"]\n";

pub fn errors(text: &str) -> Vec<Diagnostic> {
    parse_str(text, "test.toml").unwrap_err().0
}
