//! Classifying agent-opened streams by their first bytes never panics and never claims more
//! header than it was given.
#![no_main]

use agent_core::wire::AgentStream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((kind, header_len))) = AgentStream::classify(data) {
        assert!(header_len <= data.len());
        if kind == AgentStream::Manifest {
            assert_eq!(header_len, 0);
        } else {
            assert_eq!(data.get(header_len - 1), Some(&b'\n'));
        }
        // Every prefix of a classified stream is "need more" or the same answer.
        for cut in 0..header_len {
            assert_eq!(AgentStream::classify(&data[..cut]), Ok(None));
        }
        let header = kind.header();
        if !header.is_empty() {
            assert_eq!(
                AgentStream::classify(header),
                Ok(Some((kind, header.len())))
            );
        }
    }
});
