//! Bearer tokens: whatever a client sends as one must be refused or
//! accepted without a panic; a token we did not sign is never accepted.
#![no_main]

use dispatchd::auth::Tokens;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static TOKENS: LazyLock<Tokens> =
    LazyLock::new(|| Tokens::new(b"fuzzing-secret-0123456789abcdef0123", 3600));

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        TOKENS.verify(token).is_none(),
        "accepted a token we never signed: {token:?}"
    );
});
