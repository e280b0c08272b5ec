//! What handling a packet yields: a reply not yet encoded, or the finding that its `data`
//! was not JSON after all.

use bytes::BytesMut;

use crate::context::Context;
use crate::packet::Wire;

/// The `data` of a Nest-shaped packet turned out not to be one JSON value (see
/// [`Parsed::data_unchecked`](crate::packet::Parsed)): nothing was answered, logged or
/// counted, and [`Inbox::handle_frame`](super::Inbox::handle_frame) parses the packet again
/// in full.
pub(super) struct DataNotJson;

/// The reply of a request whose handler did not answer inline (it was polled as a future),
/// not yet encoded: appended to the transport's buffer of ready replies when it turned out
/// ready at once, sent to the reply sink otherwise.
pub(super) struct Answer {
    /// The request's context: the reply echoes its `id`.
    pub to: Context,
    pub body: AnswerBody,
}

pub(super) enum AnswerBody {
    Value(Option<Vec<u8>>),
    Error(Vec<u8>),
}

impl Answer {
    /// Appends the reply packet to `dst` in `wire`'s form.
    pub(super) fn encode(&self, wire: Wire, dst: &mut BytesMut) {
        let id = request_id(&self.to);
        match &self.body {
            AnswerBody::Value(value) => wire.response(dst, value.as_deref(), id),
            AnswerBody::Error(err) => wire.error(dst, err, id),
        }
    }
}

/// The `id` a request's reply echoes. (Every request's context has one; `null` only
/// keeps this total.)
pub(super) fn request_id(ctx: &Context) -> &[u8] {
    ctx.id_json().unwrap_or(b"null")
}
