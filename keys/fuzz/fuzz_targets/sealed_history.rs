#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = constella_keys::SealedHistory::from_bytes(data) {
        assert!(constella_keys::SealedHistory::from_bytes(&h.to_bytes()).is_ok());
    }
});
