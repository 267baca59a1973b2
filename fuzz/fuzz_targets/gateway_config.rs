//! The TOML config: any text parses and validates to a config or an error
//! naming the problem, never a panic.
#![no_main]

use flywheel_gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text);
    }
});
