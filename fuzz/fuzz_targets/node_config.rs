//! Feeds arbitrary text to the `node.toml` parser (`ztmesh_node::node_dir::parse_config`, what
//! `NodeDir::read_config` runs on the file), the one file an operator edits by hand.
//! Invariants: typed errors, never a panic; a config that parses writes back (as
//! `NodeDir::write_config` writes it) to text that parses to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_node::node_dir::parse_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse_config(text) else {
        return;
    };
    let written = toml::to_string_pretty(&config).expect("a parsed config writes");
    assert_eq!(
        parse_config(&written).expect("a written config parses"),
        config
    );
});
