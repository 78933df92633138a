//! Terminal frames on both legs: decoding never panics, and every decoded frame re-encodes to
//! something that decodes to the same frame.
#![no_main]

use agent_core::wire::{MAX_TERMINAL_FRAME_AGENT, MAX_TERMINAL_FRAME_RELAY, TerminalFrame};
use libfuzzer_sys::fuzz_target;

fn check_round_trip(frame: &TerminalFrame) {
    if *frame == TerminalFrame::Ignored {
        return;
    }
    let mut encoded = Vec::new();
    frame.encode(&mut encoded);
    let decoded = TerminalFrame::decode(&encoded, usize::MAX).unwrap();
    assert_eq!(decoded, Some((frame.clone(), encoded.len())));
    assert_eq!(&TerminalFrame::from_message(&frame.to_message()), frame);
}

fuzz_target!(|data: &[u8]| {
    for max in [MAX_TERMINAL_FRAME_RELAY, MAX_TERMINAL_FRAME_AGENT] {
        let mut rest = data;
        while let Ok(Some((frame, used))) = TerminalFrame::decode(rest, max) {
            assert!(used >= 4 && used <= rest.len() && used - 4 <= max);
            check_round_trip(&frame);
            rest = &rest[used..];
        }
    }
    check_round_trip(&TerminalFrame::from_message(data));
});
