//! `Event` built from arbitrary strings, encoded and parsed back: an exact round trip or a
//! typed `EventError`, and never a second event.
#![no_main]

#[path = "../checks/event_roundtrip.rs"]
mod event_roundtrip;

libfuzzer_sys::fuzz_target!(|input: &[u8]| event_roundtrip::check(input));
