//! `Parser` on arbitrary bytes: no panic, the same events whatever the chunking, bounded memory.
#![no_main]

#[path = "../checks/meter.rs"]
mod meter;
#[path = "../checks/parser.rs"]
mod parser;

#[global_allocator]
static METER: meter::Meter = meter::Meter;

libfuzzer_sys::fuzz_target!(|input: &[u8]| parser::check(input));
