#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = constella_keys::GroupMessage::from_bytes(data) {
        assert_eq!(
            constella_keys::GroupMessage::from_bytes(&m.to_bytes()).ok(),
            Some(m)
        );
    }
});
