//! [`Span`]: where a field's value lies in its frame, so that one reference to the frame
//! serves all of a packet's fields.

use bytes::Bytes;

/// Where a field's value lies in its frame (byte offsets). 32 bits: frames are limited
/// well below 4 GiB (see `codec::MAX_FRAME_LEN_LIMIT`), and a small span keeps a request
/// small enough to move without a `memcpy` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Bytes `start..end` (offsets past 4 GiB saturate: such a span selects nothing).
    pub(crate) fn new(start: usize, end: usize) -> Self {
        let offset = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
        Span {
            start: offset(start),
            end: offset(end),
        }
    }

    /// The whole of a `len`-byte buffer.
    pub(crate) fn all(len: usize) -> Self {
        Span::new(0, len)
    }

    /// This span moved `by` bytes further into its frame.
    pub(crate) fn shifted(self, by: usize) -> Self {
        Span::new(self.start as usize + by, self.end as usize + by)
    }

    /// `part`'s place in `frame`; `part` must be a subslice of `frame` (as the slices a
    /// parser borrows from the frame's text are).
    pub(super) fn of(frame: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
        debug_assert!(start <= frame.len() && part.len() <= frame.len() - start);
        Span::new(start, start + part.len())
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// This span's bytes in `frame` (empty if it does not fit, which a span made from
    /// `frame` always does).
    pub(crate) fn get(self, frame: &[u8]) -> &[u8] {
        frame.get(self.range()).unwrap_or_default()
    }

    /// This span's text in `frame` (`None` if it does not fit or cuts a character).
    pub(crate) fn text(self, frame: &str) -> Option<&str> {
        frame.get(self.range())
    }

    /// This span's bytes as a slice of `frame` (empty if it does not fit).
    pub(crate) fn slice(self, frame: &Bytes) -> Bytes {
        match self.end as usize <= frame.len() && self.start <= self.end {
            true => frame.slice(self.range()),
            false => Bytes::new(),
        }
    }
}
