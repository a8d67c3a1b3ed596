#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = constella_keys::KeyUpdate::from_bytes(data) {
        assert!(constella_keys::KeyUpdate::from_bytes(&u.to_bytes()).is_ok());
    }
});
