//! The file's shape, read past its first problem: every unknown key and every value of the
//! wrong type is reported, not only the first, and the rest of the file is still checked.
//!
//! serde stops at the first error. So the parsed tree is deserialized, and on an error the
//! item it points at (an unknown key with its value, a value of the wrong type, an array
//! element of the wrong type) is reported and cut out of the tree, and deserializing starts
//! again. What is left deserializes, and validation then checks it as usual, with the cut
//! keys at their defaults. This module owns that loop; `locate` names where each error is.

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::locate::{self, Diags};
use super::raw::RawConfig;

/// Problems reported from one file's structure at most; a file with more is not a config
/// with mistakes but something else, and each round deserializes the whole tree again.
const MAX_STRUCTURAL: usize = 100;

/// Deserializes `tree` into the schema, reporting every structural problem; `None` when
/// nothing could be read past them.
pub fn deserialize(diags: &mut Diags<'_>, tree: &Spanned<DeTable<'_>>) -> Option<RawConfig> {
    let mut pruned = tree.clone();
    for _ in 0..MAX_STRUCTURAL {
        let error = match RawConfig::deserialize(toml::de::Deserializer::from(pruned.clone())) {
            Ok(raw) => return Some(raw),
            Err(error) => error,
        };
        let Some(span) = error.span() else {
            locate::toml_error(diags, &error, Some(tree.get_ref()));
            return None;
        };
        locate::toml_error(diags, &error, Some(tree.get_ref()));
        if !prune_table(pruned.get_mut(), span.start) {
            return None;
        }
    }
    diags.at(
        None,
        "",
        format!("more than {MAX_STRUCTURAL} problems in the file's structure: stopped there"),
    );
    None
}

/// Removes the smallest item at byte `offset`: a key (with its value) whose name or value
/// is there, or an array element. Nested tables and arrays are searched first, whatever
/// their own spans say (a `[table]`'s span is its header, not its keys). Whether anything
/// was removed.
fn prune_table(table: &mut DeTable<'_>, offset: usize) -> bool {
    for (_, value) in table.iter_mut() {
        if prune_value(value.get_mut(), offset) {
            return true;
        }
    }
    let hit = table
        .iter()
        .find(|(k, v)| contains(&k.span(), offset) || contains(&v.span(), offset))
        .map(|(k, _)| k.clone());
    hit.is_some_and(|key| table.remove(&key).is_some())
}

/// Removes what is at `offset` inside a table or array value; false when nothing inside
/// it is there (the caller removes the value whole if it is).
fn prune_value(value: &mut DeValue<'_>, offset: usize) -> bool {
    match value {
        DeValue::Table(table) => prune_table(table, offset),
        DeValue::Array(array) => prune_array(array, offset),
        _ => false,
    }
}

fn prune_array(array: &mut DeArray<'_>, offset: usize) -> bool {
    for item in array.iter_mut() {
        if prune_value(item.get_mut(), offset) {
            return true;
        }
    }
    let Some(index) = array.iter().position(|v| contains(&v.span(), offset)) else {
        return false;
    };
    let kept: DeArray<'_> = std::mem::replace(array, DeArray::new())
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| (i != index).then_some(v))
        .collect();
    *array = kept;
    true
}

fn contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}
