//! A call's serialised `data`, in a buffer reused by the calls of one thread.
//!
//! A call serialises its payload, frames it into the connection's outbox and is done with
//! it, all before its first wait for the reply. So one spare buffer per thread serves every
//! call that thread makes, where a fresh `Vec` per call would cost an allocation and a
//! free. A payload kept longer (a call waiting for room in the outbox) simply leaves the
//! next call on that thread to allocate its own; whichever buffer is dropped last becomes
//! the spare.

use std::cell::Cell;

use serde::Serialize;

/// A spare larger than this is freed rather than kept (one large payload should not pin
/// its memory for the thread's life).
const KEEP_CAPACITY: usize = 64 * 1024;

thread_local! {
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Raw JSON of a call's `data`.
pub(crate) struct Payload(Vec<u8>);

impl Payload {
    /// Serialises `data` into this thread's spare buffer (or a new one).
    pub fn serialize<T: Serialize + ?Sized>(data: &T) -> Result<Self, serde_json::Error> {
        let mut payload = Payload(SPARE.try_with(Cell::take).unwrap_or_default());
        payload.0.clear();
        serde_json::to_writer(&mut payload.0, data)?;
        Ok(payload)
    }
}

impl Payload {
    /// `data` (already serialised) copied into this thread's spare buffer (or a new one).
    pub fn copy_of(data: &[u8]) -> Self {
        let mut payload = Payload(SPARE.try_with(Cell::take).unwrap_or_default());
        payload.0.clear();
        payload.0.extend_from_slice(data);
        payload
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if self.0.capacity() <= KEEP_CAPACITY {
            let buf = std::mem::take(&mut self.0);
            // During thread teardown the key is gone: the buffer is then just freed.
            let _ = SPARE.try_with(|spare| spare.set(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_payload_lends_its_buffer_to_the_next_call() {
        let first = Payload::serialize(&[1, 2, 3]).unwrap();
        assert_eq!(&*first, b"[1,2,3]");
        let ptr = first.0.as_ptr();
        drop(first);
        let second = Payload::serialize("求和").unwrap();
        assert_eq!(&*second, "\"求和\"".as_bytes());
        assert_eq!(second.0.as_ptr(), ptr, "the spare buffer was reused");
        // While `second` is alive, another call gets a buffer of its own.
        let third = Payload::serialize(&7).unwrap();
        assert_ne!(third.0.as_ptr(), ptr);
        assert_eq!(&*third, b"7");
    }

    #[test]
    fn a_failed_serialisation_is_an_error_and_large_buffers_are_not_kept() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        assert!(Payload::serialize(&map).is_err(), "non-string map keys");
        let big = Payload::serialize(&"x".repeat(KEEP_CAPACITY * 2)).unwrap();
        drop(big);
        let small = Payload::serialize(&1).unwrap();
        assert!(small.0.capacity() <= KEEP_CAPACITY);
    }
}
