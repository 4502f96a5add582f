//! The consumer's envelope decoder (`Envelope::from_slice`, what `dispatch.rs` runs on every
//! Kafka message value) on arbitrary bytes: it must answer `Ok` or `Err`, never panic, and an
//! envelope it accepts must survive the relay's encoding and decode again to itself; the typed
//! decode the handlers run must answer too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smartflow_agent_contracts::{ChatMessageAppended, TokenUsageRecorded};
use smartflow_domain::Envelope;

fuzz_target!(|bytes: &[u8]| {
    let Ok(envelope) = Envelope::from_slice(bytes) else {
        return;
    };
    let again = Envelope::from_slice(envelope.to_json().as_bytes())
        .expect("an envelope the decoder accepted decodes again after encoding");
    assert_eq!(again, envelope, "an envelope changes through encoding");
    let _ = envelope.decode::<ChatMessageAppended>();
    let _ = envelope.decode::<TokenUsageRecorded>();
    let _ = envelope.source();
    let _ = envelope.traceparent();
});
