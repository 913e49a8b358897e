//! A `--config` file: any TOML layered over the defaults is loaded and
//! checked, or refused with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = dispatchd::settings::Settings::from_toml(text);
});
