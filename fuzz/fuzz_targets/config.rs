//! Config text through `config::parse_str`, as `nodedns check-config` and every reload read
//! a file. Invariant: any UTF-8 text gives a config or a list of diagnostics, never a panic.
//! (Text that is not UTF-8 is refused before parsing, when the file is read.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodedns::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse_str(text, "fuzz.toml") {
        Ok(_) => {}
        Err(e) => assert!(!e.0.is_empty(), "a refused config says why"),
    }
});
