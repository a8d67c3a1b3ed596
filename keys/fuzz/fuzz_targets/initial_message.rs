#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = constella_keys::InitialMessage::from_bytes(data) {
        assert!(constella_keys::InitialMessage::from_bytes(&m.to_bytes()).is_ok());
    }
});
