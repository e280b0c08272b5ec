//! Hostile and malformed input over real sockets: one test per input against an in-process
//! nestling server, and the same inputs against real NestJS (`tests/nest/user-service.mjs`)
//! so that every difference is pinned down on both sides. `docs/malformed-input.md` is the
//! table these tests prove.
//!
//! Every case runs as a script on one raw TCP connection ("the peer"), and around it:
//!
//! - a **bystander**: a second connection whose `slow` request (300 ms) is already running
//!   when the hostile input is written; it must get its exact reply, not earlier than 300 ms
//!   after it was sent, and then keep serving;
//! - the **log**: nestling's `tracing` output is captured and the lines naming the peer's
//!   address (`peer=127.0.0.1:<port>`) are checked; for Nest, its `ERROR` lines on stderr
//!   while the case ran (cases take turns around the input so lines can be attributed);
//! - a **fresh connection** afterwards must be served (the server did not die or wedge);
//! - for nestling, every `slow` handler that started also finished, and the server then shuts
//!   down gracefully within 5 s (no connection task left hanging).
//!
//! A panic inside the server would abort this test process, so every passing test also
//! proves the server did not panic.
//!
//! The Nest half needs Node >= 20 and `npm ci` in `tests/nest`; without them it prints
//! `SKIPPED` and passes, unless `CI` is set.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestling::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::{
    capture_tracing, eventually, require_node, spawn_node, LogCapture, Proc, RunningServer,
};

/// How long nestling must stay silent and open where it is expected to wait for more bytes.
const WAIT_NESTLING: Duration = Duration::from_millis(800);
/// The same for Nest: well below its 30 s incomplete-frame timeout.
const WAIT_NEST: Duration = Duration::from_secs(2);
/// A closing server must have closed within this.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// Expected replies must have arrived within this.
const REPLY_WITHIN: Duration = Duration::from_secs(3);
/// How long the bystander's request runs.
const BYSTANDER_MS: u64 = 300;

// ---------------------------------------------------------------------------------------
// The controller: the same three handlers as tests/nest/user-service.mjs uses here
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Recorded {
    slow_started: AtomicUsize,
    slow_finished: AtomicUsize,
    events: Mutex<Vec<Value>>,
}

struct Hostile {
    rec: Arc<Recorded>,
}

#[nestling::controller]
impl Hostile {
    #[message_pattern("echo")]
    fn echo(&self, v: Value) -> Value {
        v
    }

    #[message_pattern("slow")]
    async fn slow(&self, ms: u64) -> u64 {
        self.rec.slow_started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.rec.slow_finished.fetch_add(1, Ordering::SeqCst);
        ms
    }

    #[event_pattern("log")]
    fn log(&self, v: Value) {
        self.rec.events.lock().unwrap().push(v);
    }
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// `json` framed with its length in UTF-16 units, as text.
fn framed(json: &str) -> String {
    format!("{}#{}", json.encode_utf16().count(), json)
}

/// `json` framed with its length in UTF-16 units, as bytes to send.
fn frame(json: &str) -> Vec<u8> {
    framed(json).into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The reply frame for a value: `{"response":R,"isDisposed":true,"id":ID}`.
fn reply(response: &str, id: &str) -> String {
    framed(&format!(
        r#"{{"response":{response},"isDisposed":true,"id":{id}}}"#
    ))
}

/// Nest's exact no-handler reply frame.
fn no_handler(id: &str) -> String {
    framed(&format!(
        r#"{{"id":{id},"status":"error","err":"There is no matching message handler defined in the remote service."}}"#
    ))
}

/// A 40-unit `echo` request (`"abc"`, id `"h"`): the body for the header-leniency cases.
const ECHO40: &str = r#"{"pattern":"echo","data":"abc","id":"h"}"#;

fn echo40_reply() -> String {
    reply(r#""abc""#, r#""h""#)
}

/// The follow-up request used to prove a connection still serves, and its reply.
const FOLLOW_UP: &str = r#"{"pattern":"echo","data":"still serving","id":"follow-up"}"#;

fn follow_up_reply() -> String {
    reply(r#""still serving""#, r#""follow-up""#)
}

/// Splits complete frames (`len#json`, `len` in UTF-16 units) off the front of `buf`.
fn split_frames(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let Some(hash) = buf.iter().position(|&b| b == b'#') else {
            return out;
        };
        let Some(len) = std::str::from_utf8(&buf[..hash])
            .ok()
            .and_then(|h| h.parse::<usize>().ok())
        else {
            return out;
        };
        let body = &buf[hash + 1..];
        let text = match std::str::from_utf8(body) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).unwrap(),
        };
        let mut units = 0;
        let mut end = None;
        for (at, c) in text.char_indices() {
            if units == len {
                end = Some(at);
                break;
            }
            units += c.len_utf16();
        }
        let end = match end {
            Some(e) => e,
            None if units == len => text.len(),
            None => return out,
        };
        let total = hash + 1 + end;
        out.push(String::from_utf8_lossy(&buf[..total]).into_owned());
        buf.drain(..total);
    }
}

// ---------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------

/// One step of what the peer does, or what it must observe.
#[derive(Clone, Debug)]
enum Step {
    /// Write these bytes in one write.
    Send(Vec<u8>),
    /// Write these bytes one byte per write (TCP_NODELAY, 2 ms apart).
    SendBytewise(Vec<u8>),
    /// Wait.
    Pause(Duration),
    /// Half-close: shut down the peer's write side (FIN), keep reading.
    Fin,
    /// Close the peer's socket entirely.
    Hangup,
    /// Exactly these reply frames arrive next (in any order), within [`REPLY_WITHIN`].
    Replies(Vec<String>),
    /// Nothing arrives and the connection stays open for this long.
    Silent(Duration),
    /// The server closes the connection (EOF or reset) within [`CLOSE_WITHIN`], sending
    /// nothing more.
    Closed,
    /// A follow-up `echo` request on the same connection gets exactly its reply.
    Serves,
    /// The `log` event handler received this value.
    Event(Value),
}

use Step::*;

/// What the server logs about the peer.
#[derive(Clone, Debug)]
enum Log {
    /// Nothing at WARN/ERROR level.
    Quiet,
    /// Exactly one WARN/ERROR line, containing this text.
    Line(&'static str),
}

#[derive(Clone, Debug)]
struct Behaviour {
    steps: Vec<Step>,
    log: Log,
}

fn behaves(steps: impl Into<Vec<Step>>, log: Log) -> Behaviour {
    Behaviour {
        steps: steps.into(),
        log,
    }
}

/// One hostile input, with nestling's and Nest's behaviour for it.
#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    nestling: Behaviour,
    nest: Behaviour,
}

fn same(name: &'static str, steps: impl Into<Vec<Step>>, nestling_log: Log, nest_log: Log) -> Case {
    let steps = steps.into();
    Case {
        name,
        nestling: behaves(steps.clone(), nestling_log),
        nest: behaves(steps, nest_log),
    }
}

// Log texts.
const NEST_CORRUPTED: &str = "Corrupted length value of the received data supplied in a packet";
const NEST_INVALID: &str = "The invalid received message from tcp server";
const UNDEFINED_EVENT: &str =
    "There is no matching event handler defined in the remote service. Event pattern: undefined";
const NOT_JSON: &str = "closing connection: frame is not valid JSON";
const REJECTED: &str = "request rejected: invalid payload for pattern echo";
const MID_FRAME: &str = "peer closed the connection in the middle of a frame";
const HEADER_TOO_LONG: &str = "closing connection: frame header longer than 64 bytes without '#'";

// ---------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------

fn case_non_numeric_length() -> Case {
    same(
        "abc#{}",
        [Send(b"abc#{}".to_vec()), Closed],
        Log::Line(r#"closing connection: corrupted length value "abc" in frame header"#),
        Log::Line(NEST_CORRUPTED),
    )
}

fn case_empty_length() -> Case {
    same(
        "#{}",
        [Send(b"#{}".to_vec()), Closed],
        Log::Line(r#"closing connection: corrupted length value "" in frame header"#),
        Log::Line(NEST_CORRUPTED),
    )
}

fn case_negative_length() -> Case {
    same(
        "-5#{…}",
        [
            Send(b"-5#{\"pattern\":\"echo\",\"data\":1,\"id\":\"n\"}".to_vec()),
            Closed,
        ],
        Log::Line(r#"closing connection: invalid frame length "-5""#),
        Log::Line(NEST_INVALID),
    )
}

fn case_zero_length() -> Case {
    same(
        "0#{…}",
        [
            Send(b"0#{\"pattern\":\"echo\",\"data\":1,\"id\":\"z\"}".to_vec()),
            Closed,
        ],
        Log::Line(r#"closing connection: invalid frame length "0""#),
        Log::Line(NEST_INVALID),
    )
}

fn case_absurd_length() -> Case {
    let input = b"99999999999999999999#".to_vec();
    Case {
        name: "99999999999999999999#",
        // Overflows usize: refused at once as too large.
        nestling: behaves(
            [Send(input.clone()), Closed],
            Log::Line("closing connection: frame of 18446744073709551615 UTF-16 units exceeds the limit of 134217728"),
        ),
        // parseInt gives 1e20 and Nest waits for that many units; a valid frame sent
        // next is swallowed into the body.
        nest: behaves(
            [
                Send(input),
                Silent(WAIT_NEST),
                Send(frame(FOLLOW_UP)),
                Silent(Duration::from_millis(300)),
            ],
            Log::Quiet,
        ),
    }
}

fn case_over_limit_length() -> Case {
    let input = b"134217729#{\"pattern\"".to_vec();
    Case {
        name: "134217729#… (limit + 1)",
        nestling: behaves(
            [Send(input.clone()), Closed],
            Log::Line("closing connection: frame of 134217729 UTF-16 units exceeds the limit of 134217728"),
        ),
        // Nest checks the buffered size, not the declared one: it waits.
        nest: behaves([Send(input), Silent(WAIT_NEST)], Log::Quiet),
    }
}

fn case_length_too_short() -> Case {
    same(
        "length too short (10# for 36 units)",
        [
            Send(b"10#{\"pattern\":\"echo\",\"data\":1,\"id\":\"s\"}".to_vec()),
            Closed,
        ],
        Log::Line(NOT_JSON),
        Log::Line(NEST_INVALID),
    )
}

fn case_length_too_long() -> Case {
    // 36 units declared as 45: the body swallows `39#{"patt` of the next frame.
    let first = br#"45#{"pattern":"echo","data":1,"id":"l"}"#;
    let next = frame(r#"{"pattern":"echo","data":2,"id":"l2"}"#);
    same(
        "length too long (45# for 36 units, then a frame)",
        [Send(cat(&[first, &next])), Closed],
        Log::Line(NOT_JSON),
        Log::Line(NEST_INVALID),
    )
}

fn case_utf8_byte_count() -> Case {
    // 43 UTF-16 units, 47 UTF-8 bytes: the sender counted bytes.
    let json = r#"{"pattern":"echo","data":"求和1111","id":"u"}"#;
    assert_eq!((json.encode_utf16().count(), json.len()), (43, 47));
    let input = format!("{}#{json}", json.len()).into_bytes();
    let next = frame(r#"{"pattern":"echo","data":2,"id":"next"}"#);
    Case {
        name: "UTF-8 byte count as length (47# for 43 units of CJK)",
        nestling: behaves(
            [
                Send(input.clone()),
                Silent(WAIT_NESTLING),
                Send(next.clone()),
                Closed,
            ],
            Log::Line(NOT_JSON),
        ),
        nest: behaves(
            [Send(input), Silent(WAIT_NEST), Send(next), Closed],
            Log::Line(NEST_INVALID),
        ),
    }
}

fn case_invalid_json() -> Case {
    same(
        "5#{abc} (invalid JSON)",
        [Send(b"5#{abc}".to_vec()), Closed],
        Log::Line(NOT_JSON),
        Log::Line(NEST_INVALID),
    )
}

/// Nest's own packet shape around a `data` that is not JSON. nestling cuts such packets at
/// their fixed tokens and checks only `data`: the frame must still close the connection,
/// with one log line and no reply.
fn case_shaped_request_data_not_json() -> Case {
    same(
        r#"{"pattern":"echo","data":[1,2,],"id":"1"} (Nest's shape, data not JSON)"#,
        [
            Send(frame(r#"{"pattern":"echo","data":[1,2,],"id":"1"}"#)),
            Closed,
        ],
        Log::Line(NOT_JSON),
        Log::Line(NEST_INVALID),
    )
}

fn case_shaped_event_data_not_json() -> Case {
    same(
        r#"{"pattern":"log","data":[1,} (Nest's event shape, data not JSON)"#,
        [Send(frame(r#"{"pattern":"log","data":[1,}"#)), Closed],
        Log::Line(NOT_JSON),
        Log::Line(NEST_INVALID),
    )
}

/// Looks like Nest's event shape, but what follows `"data":` is not one value: a valid
/// packet with one more key. The `log` handler's payload decoding rejects the cut `data`;
/// the frame is then read whole, and the event is handled once with its real `data`.
fn case_event_with_extra_key() -> Case {
    same(
        r#"{"pattern":"log","data":7,"x":"y"} (event shape with an extra key)"#,
        [
            Send(frame(r#"{"pattern":"log","data":7,"x":"y"}"#)),
            Event(json!(7)),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

/// Looks like Nest's shape cut at the last `,"id":`, but is an object with `id` twice: the
/// last one counts (as in `JSON.parse`).
fn case_repeated_id_key() -> Case {
    same(
        r#"{"pattern":"echo","data":40,"id":"x","id":"y"} (repeated key)"#,
        [
            Send(frame(r#"{"pattern":"echo","data":40,"id":"x","id":"y"}"#)),
            Replies(vec![reply("40", r#""y""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn non_object(name: &'static str, json: &str) -> Case {
    same(
        name,
        [Send(frame(json)), Serves],
        Log::Line(UNDEFINED_EVENT),
        Log::Line(UNDEFINED_EVENT),
    )
}

fn case_json_number() -> Case {
    non_object("1#5 (JSON number)", "5")
}

fn case_json_array() -> Case {
    non_object("2#[] (JSON array)", "[]")
}

fn case_json_string() -> Case {
    non_object(r#"3#"s" (JSON string)"#, r#""s""#)
}

fn case_json_null() -> Case {
    non_object("4#null", "null")
}

fn case_json_true() -> Case {
    non_object("4#true", "true")
}

fn case_missing_pattern() -> Case {
    same(
        r#"{"data":1,"id":"m"} (no pattern)"#,
        [
            Send(frame(r#"{"data":1,"id":"m"}"#)),
            Replies(vec![no_handler(r#""m""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_null_pattern() -> Case {
    same(
        r#"{"pattern":null,…,"id":"np"}"#,
        [
            Send(frame(r#"{"pattern":null,"data":1,"id":"np"}"#)),
            Replies(vec![no_handler(r#""np""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn odd_id(name: &'static str, id: &str) -> Case {
    same(
        name,
        [
            Send(frame(&format!(
                r#"{{"pattern":"echo","data":1,"id":{id}}}"#
            ))),
            Replies(vec![reply("1", id)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_id_number() -> Case {
    odd_id("id 7 (number)", "7")
}

fn case_id_null() -> Case {
    odd_id("id null", "null")
}

fn case_id_object() -> Case {
    odd_id(r#"id {"x":[1,2]} (object)"#, r#"{"x":[1,2]}"#)
}

fn case_id_empty_string() -> Case {
    odd_id(r#"id "" (empty string)"#, r#""""#)
}

fn case_id_non_canonical() -> Case {
    let id = r#"[1.0, 1e2, {"a" : "b"}]"#;
    let input = frame(&format!(r#"{{"pattern":"echo","data":1,"id":{id}}}"#));
    Case {
        name: r#"id [1.0, 1e2, {"a" : "b"}] (non-canonical JSON)"#,
        // nestling echoes the id's text byte for byte...
        nestling: behaves(
            [Send(input.clone()), Replies(vec![reply("1", id)]), Serves],
            Log::Quiet,
        ),
        // ...Nest echoes JSON.stringify(JSON.parse(id)): the same value, other text.
        nest: behaves(
            [
                Send(input),
                Replies(vec![reply("1", r#"[1,100,{"a":"b"}]"#)]),
                Serves,
            ],
            Log::Quiet,
        ),
    }
}

fn case_bytewise() -> Case {
    same(
        "request and event written one byte at a time (CJK)",
        [
            SendBytewise(cat(&[
                &frame(r#"{"pattern":"echo","data":"求和1111","id":"b1"}"#),
                &frame(r#"{"pattern":"log","data":"求和1111 bytewise"}"#),
            ])),
            Replies(vec![reply(r#""求和1111""#, r#""b1""#)]),
            Event(json!("求和1111 bytewise")),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_huge_declared_then_close() -> Case {
    same(
        "1000000#{\"pattern\" then the peer closes",
        [
            Send(b"1000000#{\"pattern\"".to_vec()),
            Pause(Duration::from_millis(50)),
            Hangup,
        ],
        Log::Line(MID_FRAME),
        Log::Quiet,
    )
}

fn case_disconnect_mid_frame() -> Case {
    same(
        "40#{\"pattern\":\"ec then the peer closes",
        [
            Send(b"40#{\"pattern\":\"ec".to_vec()),
            Pause(Duration::from_millis(50)),
            Hangup,
        ],
        Log::Line(MID_FRAME),
        Log::Quiet,
    )
}

fn case_disconnect_in_flight() -> Case {
    same(
        "peer closes with requests in flight (and an unread reply: RST)",
        [
            Send(cat(&[
                &frame(r#"{"pattern":"slow","data":200,"id":"gone1"}"#),
                &frame(r#"{"pattern":"slow","data":250,"id":"gone2"}"#),
                &frame(r#"{"pattern":"echo","data":"gone3","id":"gone3"}"#),
                &frame(r#"{"pattern":"log","data":"sent before hanging up"}"#),
            ])),
            Pause(Duration::from_millis(50)),
            Hangup,
            Event(json!("sent before hanging up")),
            // Outlive the abandoned handlers: their replies go nowhere, harmlessly.
            Pause(Duration::from_millis(300)),
        ],
        // The reset is only a DEBUG line ("read failed: Connection reset by peer").
        Log::Quiet,
        // Nest logs the socket's ECONNRESET under its framing-error text.
        Log::Line(NEST_INVALID),
    )
}

fn case_half_close_in_flight() -> Case {
    let input = frame(r#"{"pattern":"slow","data":300,"id":"hc"}"#);
    Case {
        name: "FIN (half-close) with a request in flight",
        // nestling finishes the request, replies, then closes.
        nestling: behaves(
            [
                Send(input.clone()),
                Fin,
                Replies(vec![reply("300", r#""hc""#)]),
                Closed,
            ],
            Log::Quiet,
        ),
        // Nest (allowHalfOpen: false) ends its side at once; the reply is dropped.
        nest: behaves([Send(input), Fin, Closed], Log::Quiet),
    }
}

fn case_bad_frame_own_request_in_flight() -> Case {
    let input = frame(r#"{"pattern":"slow","data":300,"id":"own"}"#);
    Case {
        name: "abc#{} with a request of the same connection in flight",
        // nestling stops reading at once, but the running request still gets its reply;
        // then the connection closes.
        nestling: behaves(
            [
                Send(input.clone()),
                Pause(Duration::from_millis(30)),
                Send(b"abc#{}".to_vec()),
                Replies(vec![reply("300", r#""own""#)]),
                Closed,
            ],
            Log::Line(r#"closing connection: corrupted length value "abc" in frame header"#),
        ),
        // Nest half-closes at once and drops the pending reply.
        nest: behaves(
            [
                Send(input),
                Pause(Duration::from_millis(30)),
                Send(b"abc#{}".to_vec()),
                Closed,
            ],
            Log::Line(NEST_CORRUPTED),
        ),
    }
}

fn lenient(name: &'static str, header: &str) -> Case {
    same(
        name,
        [
            Send(format!("{header}#{ECHO40}").into_bytes()),
            Replies(vec![echo40_reply()]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_header_leading_space() -> Case {
    lenient("header ' 40'", " 40")
}

fn case_header_plus() -> Case {
    lenient("header '+40'", "+40")
}

fn case_header_leading_zero() -> Case {
    lenient("header '040'", "040")
}

fn case_header_trailing_junk() -> Case {
    lenient("header '40abc'", "40abc")
}

fn case_header_decimal() -> Case {
    lenient("header '40.9'", "40.9")
}

fn case_crlf_between_frames() -> Case {
    let second = r#"{"pattern":"echo","data":"def","id":"i"}"#;
    same(
        "\\r\\n between frames",
        [
            Send(cat(&[&frame(ECHO40), b"\r\n", &frame(second)])),
            Replies(vec![echo40_reply(), reply(r#""def""#, r#""i""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_trailing_newline() -> Case {
    same(
        "trailing \\n after a frame",
        [
            Send(cat(&[&frame(ECHO40), b"\n"])),
            Replies(vec![echo40_reply()]),
            // `\n47#…` parses as a header with leading whitespace.
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_trailing_newline_then_fin() -> Case {
    Case {
        name: "trailing \\n after a frame, then FIN",
        // Replied to, then closed; trailing whitespace at EOF is not a partial frame.
        nestling: behaves(
            [
                Send(cat(&[&frame(ECHO40), b"\n"])),
                Fin,
                Replies(vec![echo40_reply()]),
                Closed,
            ],
            Log::Quiet,
        ),
        nest: behaves(
            [
                Send(cat(&[&frame(ECHO40), b"\n"])),
                Fin,
                Replies(vec![echo40_reply()]),
                Closed,
            ],
            Log::Quiet,
        ),
    }
}

fn case_lone_surrogate() -> Case {
    // JSON escapes of a lone surrogate, as JSON.stringify writes them for broken strings.
    let input = frame(r#"{"pattern":"echo","data":"x\ud800y","id":"\ud800"}"#);
    Case {
        name: r#"lone surrogate escapes "\ud800" in data and id"#,
        // The id is echoed raw; `data` cannot hold a lone surrogate as a Rust string, so it
        // arrives with U+FFFD in its place, as Node's UTF-8 encoder would write it.
        nestling: behaves(
            [
                Send(input.clone()),
                Replies(vec![reply("\"x\u{FFFD}y\"", r#""\ud800""#)]),
                Serves,
            ],
            Log::Quiet,
        ),
        nest: behaves(
            [
                Send(input),
                Replies(vec![reply(r#""x\ud800y""#, r#""\ud800""#)]),
                Serves,
            ],
            Log::Quiet,
        ),
    }
}

fn case_header_without_hash() -> Case {
    // A peer that is not speaking Nest framing: bare JSON, no length header.
    let raw = br#"{"pattern":"echo","data":"no length header anywhere here","id":"raw"}"#.to_vec();
    assert!(raw.len() > 64);
    Case {
        name: "over 64 bytes without '#' (bare JSON)",
        nestling: behaves([Send(raw.clone()), Closed], Log::Line(HEADER_TOO_LONG)),
        // Nest waits for a '#'; when one arrives (in the next frame), the whole prefix
        // is the "length" and parseInt gives NaN.
        nest: behaves(
            [Send(raw), Silent(WAIT_NEST), Send(frame(FOLLOW_UP)), Closed],
            Log::Line(NEST_CORRUPTED),
        ),
    }
}

fn case_header_padded_past_64() -> Case {
    let input = cat(&[&[b' '; 65], &frame(ECHO40)]);
    Case {
        name: "65 spaces then a valid frame ('#' past byte 64)",
        nestling: behaves([Send(input.clone()), Closed], Log::Line(HEADER_TOO_LONG)),
        nest: behaves(
            [Send(input), Replies(vec![echo40_reply()]), Serves],
            Log::Quiet,
        ),
    }
}

fn case_invalid_utf8() -> Case {
    // `ff fe` are two invalid bytes: two U+FFFD, two units, so 41 units in all.
    same(
        "invalid UTF-8 (ff fe) inside a JSON string",
        [
            Send(b"41#{\"pattern\":\"echo\",\"data\":\"a\xff\xfeb\",\"id\":\"h\"}".to_vec()),
            Replies(vec![reply("\"a\u{fffd}\u{fffd}b\"", r#""h""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn case_truncated_sequence() -> Case {
    // `e6 b1` is the start of 求 (e6 b1 82) cut short: one U+FFFD, one unit.
    same(
        "truncated UTF-8 sequence (e6 b1) inside a JSON string",
        [
            Send(b"40#{\"pattern\":\"echo\",\"data\":\"a\xe6\xb1b\",\"id\":\"h\"}".to_vec()),
            Replies(vec![reply("\"a\u{fffd}b\"", r#""h""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn case_deep_frame() -> Case {
    same(
        "array nested 200 deep as the whole frame",
        [Send(frame(&nested(200))), Serves],
        Log::Line(UNDEFINED_EVENT),
        Log::Line(UNDEFINED_EVENT),
    )
}

fn case_very_deep_frame() -> Case {
    same(
        "array nested 100000 deep as the whole frame",
        [Send(frame(&nested(100_000))), Serves],
        Log::Line(UNDEFINED_EVENT),
        Log::Line(UNDEFINED_EVENT),
    )
}

fn case_deep_data() -> Case {
    let d = nested(200);
    let input = frame(&format!(r#"{{"pattern":"echo","data":{d},"id":"deep"}}"#));
    Case {
        name: "echo of data nested 200 deep",
        // serde_json stops at depth 128 when building the handler's `Value`: an error
        // reply instead of running the handler.
        nestling: behaves(
            [
                Send(input.clone()),
                Replies(vec![framed(
                    r#"{"err":{"status":"error","message":"invalid payload for pattern echo: recursion limit exceeded at line 1 column 128"},"isDisposed":true,"id":"deep"}"#,
                )]),
                Serves,
            ],
            Log::Line(REJECTED),
        ),
        nest: behaves(
            [Send(input), Replies(vec![reply(&d, r#""deep""#)]), Serves],
            Log::Quiet,
        ),
    }
}

fn case_duplicate_keys() -> Case {
    same(
        "duplicate keys (last wins)",
        [
            Send(frame(
                r#"{"pattern":"nope","pattern":"echo","data":1,"data":2,"id":"a","id":"b"}"#,
            )),
            Replies(vec![reply("2", r#""b""#)]),
            Serves,
        ],
        Log::Quiet,
        Log::Quiet,
    )
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

/// The server a case runs against.
enum Target<'a> {
    Nestling {
        addr: SocketAddr,
        logs: LogCapture,
        rec: Arc<Recorded>,
    },
    Nest {
        proc: &'a Proc,
        /// Cases take turns writing their input, so Nest's log lines (which do not name
        /// the peer) can be attributed.
        turn: &'a tokio::sync::Mutex<()>,
    },
}

impl Target<'_> {
    fn addr(&self) -> String {
        match self {
            Target::Nestling { addr, .. } => addr.to_string(),
            Target::Nest { proc, .. } => proc.addr(),
        }
    }

    fn is_nest(&self) -> bool {
        matches!(self, Target::Nest { .. })
    }

    /// Nest's ERROR lines on stderr so far.
    fn nest_errors(&self) -> Vec<String> {
        match self {
            Target::Nest { proc, .. } => proc.stderr.matching(|l| l.contains(" ERROR ")),
            Target::Nestling { .. } => Vec::new(),
        }
    }
}

/// A raw client connection and the bytes received on it but not yet consumed.
struct Peer {
    sock: Option<TcpStream>,
    pending: Vec<u8>,
}

impl Peer {
    async fn connect(addr: &str) -> Result<Self, String> {
        // Each connection comes from a loopback address of its own (127.10.x.y): the log
        // check filters the shared log capture by `peer=`, and an ephemeral port freed by
        // one test and reused by another (concurrent) one must not mix their lines.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let source = std::net::Ipv4Addr::new(127, 10, (n / 250 % 250) as u8, (n % 250 + 1) as u8);
        let target: std::net::SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("resolve {addr}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("{addr}: no IPv4 address"))?;
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind((source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        let sock = socket
            .connect(target)
            .await
            .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Self {
            sock: Some(sock),
            pending: Vec::new(),
        })
    }

    fn sock(&mut self) -> Result<&mut TcpStream, String> {
        self.sock
            .as_mut()
            .ok_or_else(|| "the peer already hung up".to_string())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock()?
            .write_all(bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// Reads once into `pending`: `Ok(true)` for data, `Ok(false)` for EOF or reset,
    /// `Err(())` when nothing came before `deadline`.
    async fn read_some(&mut self, deadline: Instant) -> Result<bool, ()> {
        let mut buf = [0u8; 4096];
        let sock = self.sock.as_mut().ok_or(())?;
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
            Ok(Ok(n)) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(true)
            }
        }
    }

    /// Reads exactly `want` frames (compared in any order) and nothing else so far.
    async fn expect_replies(&mut self, want: &[String]) -> Result<(), String> {
        let deadline = Instant::now() + REPLY_WITHIN;
        let mut got = Vec::new();
        loop {
            got.extend(split_frames(&mut self.pending));
            if got.len() >= want.len() {
                break;
            }
            match self.read_some(deadline).await {
                Ok(true) => continue,
                Ok(false) => {
                    return Err(format!(
                        "connection closed after {got:?} (+ {:?}); expected replies {want:?}",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
                Err(()) => {
                    return Err(format!(
                        "only {got:?} (+ {:?}) within {REPLY_WITHIN:?}; expected replies {want:?}",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
            }
        }
        let (mut got_sorted, mut want_sorted) = (got.clone(), want.to_vec());
        got_sorted.sort();
        want_sorted.sort();
        if got_sorted != want_sorted {
            return Err(format!("replies {got:?}, expected {want:?}"));
        }
        Ok(())
    }

    async fn expect_closed(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + CLOSE_WITHIN;
        loop {
            if !self.pending.is_empty() {
                return Err(format!(
                    "received {:?}; expected the connection to close with nothing more",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
            match self.read_some(deadline).await {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(()) => return Err(format!("still open after {CLOSE_WITHIN:?}")),
            }
        }
    }

    async fn expect_silent(&mut self, window: Duration) -> Result<(), String> {
        let deadline = Instant::now() + window;
        if !self.pending.is_empty() {
            return Err(format!(
                "received {:?}; expected silence",
                String::from_utf8_lossy(&self.pending)
            ));
        }
        match self.read_some(deadline).await {
            Err(()) => Ok(()),
            Ok(true) => Err(format!(
                "received {:?}; expected silence for {window:?}",
                String::from_utf8_lossy(&self.pending)
            )),
            Ok(false) => Err(format!(
                "the server closed the connection; expected it open and silent for {window:?}"
            )),
        }
    }

    async fn expect_serves(&mut self) -> Result<(), String> {
        self.send(&frame(FOLLOW_UP)).await?;
        self.expect_replies(&[follow_up_reply()])
            .await
            .map_err(|e| format!("follow-up request: {e}"))
    }
}

/// Waits until the `log` handler of `target` received `value`.
async fn expect_event(target: &Target<'_>, value: &Value) -> Result<(), String> {
    match target {
        Target::Nestling { rec, .. } => eventually(REPLY_WITHIN, || {
            rec.events.lock().unwrap().contains(value).then_some(())
        })
        .await
        .ok_or_else(|| {
            format!(
                "the log handler received {:?}, not {value}",
                rec.events.lock().unwrap()
            )
        }),
        Target::Nest { proc, .. } => {
            let line = format!("EVENT log {value}");
            proc.stdout
                .wait_for(|l| l == line, 1, REPLY_WITHIN)
                .await
                .map(|_| ())
                .map_err(|e| format!("Nest printed no {line:?}: {e}"))
        }
    }
}

/// Runs `case` against `target` with a bystander and the checks described at the top.
async fn run_case(target: &Target<'_>, case: &Case) -> Result<(), String> {
    // Nest: take our turn (released while merely waiting, see `Silent`).
    let mut turn = match target {
        Target::Nest { turn, .. } => Some(turn.lock().await),
        Target::Nestling { .. } => None,
    };
    let result = run_case_in_turn(target, case, &mut turn).await;
    if result.is_err() && turn.is_some() {
        // Sockets dropped with unread data on the way out make Nest log a reset: let that
        // line land in this case's turn, not in the next case's.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    result
}

async fn run_case_in_turn<'a>(
    target: &Target<'a>,
    case: &Case,
    turn: &mut Option<tokio::sync::MutexGuard<'a, ()>>,
) -> Result<(), String> {
    let behaviour = if target.is_nest() {
        &case.nest
    } else {
        &case.nestling
    };
    let addr = target.addr();
    let mut nest_errors: Vec<String> = Vec::new();
    let mut mark = target.nest_errors().len();

    // The bystander's request is running before the hostile input is written.
    let mut bystander = Peer::connect(&addr).await?;
    let bystander_sent = Instant::now();
    bystander
        .send(&frame(&format!(
            r#"{{"pattern":"slow","data":{BYSTANDER_MS},"id":"bystander"}}"#
        )))
        .await?;
    match target {
        Target::Nestling { rec, .. } => {
            eventually(REPLY_WITHIN, || {
                (rec.slow_started.load(Ordering::SeqCst) >= 1).then_some(())
            })
            .await
            .ok_or("the bystander's slow request never started")?;
        }
        Target::Nest { .. } => tokio::time::sleep(Duration::from_millis(30)).await,
    }

    let mut peer = Peer::connect(&addr).await?;
    let local = peer
        .sock
        .as_ref()
        .unwrap()
        .local_addr()
        .map_err(|e| e.to_string())?;
    for (i, step) in behaviour.steps.iter().enumerate() {
        let result = match step {
            Send(bytes) => peer.send(bytes).await,
            SendBytewise(bytes) => {
                let mut r = Ok(());
                for b in bytes {
                    r = peer.send(&[*b]).await;
                    if r.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                r
            }
            Pause(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Fin => peer
                .sock()?
                .shutdown()
                .await
                .map_err(|e| format!("shutdown(Write) failed: {e}")),
            Hangup => {
                peer.sock = None;
                Ok(())
            }
            Replies(want) => peer.expect_replies(want).await,
            Silent(window) => {
                if let Some(guard) = turn.take() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    nest_errors.extend(target.nest_errors().into_iter().skip(mark));
                    drop(guard);
                }
                let r = peer.expect_silent(*window).await;
                if let Target::Nest { turn: t, .. } = target {
                    *turn = Some(t.lock().await);
                    mark = target.nest_errors().len();
                }
                r
            }
            Closed => peer.expect_closed().await,
            Serves => peer.expect_serves().await,
            Event(value) => expect_event(target, value).await,
        };
        result.map_err(|e| format!("step {} {step:?}: {e}", i + 1))?;
    }
    drop(peer);

    // The log.
    match target {
        Target::Nestling { logs, .. } => {
            let loud = |l: &str| l.contains(" WARN ") || l.contains(" ERROR ");
            if let Log::Line(text) = &behaviour.log {
                logs.wait_for(REPLY_WITHIN, |l| l.contains(text) && logs_name(l, local))
                    .await;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let lines: Vec<String> = logs
                .for_peer(local)
                .into_iter()
                .filter(|l| loud(l))
                .collect();
            check_log(&behaviour.log, &lines, "nestling")?;
        }
        Target::Nest { .. } => {
            if turn.is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                nest_errors.extend(target.nest_errors().into_iter().skip(mark));
            }
            check_log(&behaviour.log, &nest_errors, "Nest")?;
        }
    }
    *turn = None;

    // The bystander got its exact reply, only after its full 300 ms, and still serves.
    bystander
        .expect_replies(&[reply(&BYSTANDER_MS.to_string(), r#""bystander""#)])
        .await
        .map_err(|e| format!("bystander: {e}"))?;
    let took = bystander_sent.elapsed();
    // (A little slack: Node's timers may fire a millisecond early against our clock.)
    if took < Duration::from_millis(BYSTANDER_MS - 25) {
        return Err(format!(
            "bystander replied after {took:?}, before its handler's sleep ended"
        ));
    }
    bystander
        .expect_serves()
        .await
        .map_err(|e| format!("bystander: {e}"))?;

    // The server still accepts and serves new connections.
    let mut fresh = Peer::connect(&addr).await?;
    fresh
        .expect_serves()
        .await
        .map_err(|e| format!("fresh connection after the case: {e}"))?;
    Ok(())
}

/// Whether a nestling log line names `peer`.
fn logs_name(line: &str, peer: SocketAddr) -> bool {
    let field = format!("peer={peer}");
    line.match_indices(&field)
        .any(|(at, _)| !line[at + field.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

fn check_log(want: &Log, lines: &[String], who: &str) -> Result<(), String> {
    match want {
        Log::Quiet if lines.is_empty() => Ok(()),
        Log::Quiet => Err(format!(
            "{who} logged {lines:#?}; expected no WARN/ERROR line"
        )),
        Log::Line(text) if lines.len() == 1 && lines[0].contains(text) => Ok(()),
        Log::Line(text) => Err(format!(
            "{who} logged {lines:#?}; expected exactly one WARN/ERROR line containing {text:?}"
        )),
    }
}

/// Runs `case` against a fresh in-process nestling server and shuts it down gracefully.
async fn check_nestling(case: Case) {
    let logs = capture_tracing();
    let rec = Arc::new(Recorded::default());
    let server = Server::builder()
        .discover(false)
        .controller(Hostile { rec: rec.clone() })
        .shutdown_grace(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = RunningServer::start(server).await;
    let target = Target::Nestling {
        addr: server.addr,
        logs: logs.clone(),
        rec: rec.clone(),
    };
    if let Err(e) = run_case(&target, &case).await {
        let recent = logs.lines();
        let recent = recent[recent.len().saturating_sub(30)..].join("\n");
        panic!(
            "nestling, case {:?}: {e}\n--- last captured log lines (all tests) ---\n{recent}",
            case.name
        );
    }
    // Every handler that was started ran to completion (none was lost or wedged).
    eventually(Duration::from_secs(2), || {
        (rec.slow_started.load(Ordering::SeqCst) == rec.slow_finished.load(Ordering::SeqCst))
            .then_some(())
    })
    .await
    .expect("a slow handler never finished");
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("graceful shutdown after the case took more than 5 s");
}

// ---------------------------------------------------------------------------------------
// One test per input against nestling, and the whole matrix against Nest
// ---------------------------------------------------------------------------------------

macro_rules! matrix {
    ($($test:ident => $case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                check_nestling($case()).await;
            }
        )*

        fn all_cases() -> Vec<Case> {
            vec![$($case()),*]
        }
    };
}

matrix! {
    non_numeric_length => case_non_numeric_length,
    empty_length => case_empty_length,
    negative_length => case_negative_length,
    zero_length => case_zero_length,
    absurdly_large_length => case_absurd_length,
    length_over_the_limit => case_over_limit_length,
    length_too_short => case_length_too_short,
    length_too_long_swallows_next_frame => case_length_too_long,
    utf8_byte_count_instead_of_utf16_units => case_utf8_byte_count,
    invalid_json => case_invalid_json,
    shaped_request_data_not_json => case_shaped_request_data_not_json,
    shaped_event_data_not_json => case_shaped_event_data_not_json,
    event_with_extra_key => case_event_with_extra_key,
    repeated_id_key => case_repeated_id_key,
    json_number_is_an_undefined_event => case_json_number,
    json_array_is_an_undefined_event => case_json_array,
    json_string_is_an_undefined_event => case_json_string,
    json_null_is_an_undefined_event => case_json_null,
    json_true_is_an_undefined_event => case_json_true,
    missing_pattern_with_id => case_missing_pattern,
    null_pattern => case_null_pattern,
    id_number_echoed => case_id_number,
    id_null_echoed => case_id_null,
    id_object_echoed => case_id_object,
    id_empty_string_echoed => case_id_empty_string,
    id_non_canonical_json => case_id_non_canonical,
    frame_written_one_byte_at_a_time => case_bytewise,
    huge_declared_length_then_close => case_huge_declared_then_close,
    disconnect_mid_frame => case_disconnect_mid_frame,
    disconnect_with_requests_in_flight => case_disconnect_in_flight,
    half_close_with_request_in_flight => case_half_close_in_flight,
    bad_frame_with_own_request_in_flight => case_bad_frame_own_request_in_flight,
    header_leading_space => case_header_leading_space,
    header_plus_sign => case_header_plus,
    header_leading_zero => case_header_leading_zero,
    header_trailing_junk => case_header_trailing_junk,
    header_decimal_point => case_header_decimal,
    crlf_between_frames => case_crlf_between_frames,
    trailing_newline_after_frame => case_trailing_newline,
    trailing_newline_then_fin => case_trailing_newline_then_fin,
    lone_surrogate_escapes => case_lone_surrogate,
    header_over_64_bytes_without_hash => case_header_without_hash,
    header_padded_past_64_bytes => case_header_padded_past_64,
    invalid_utf8_in_json_string => case_invalid_utf8,
    duplicate_keys_last_wins => case_duplicate_keys,
    truncated_utf8_sequence_in_json_string => case_truncated_sequence,
    array_nested_200_deep => case_deep_frame,
    array_nested_100000_deep => case_very_deep_frame,
    data_nested_200_deep => case_deep_data,
}

/// A trailing `\n` left alone in the buffer is an incomplete frame, on both sides: Nest
/// destroys the connection after `incompleteMessageTimeout` (30 s); nestling closes it after
/// `incomplete_frame_timeout` (30 s by default; 300 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_newline_then_idle_is_an_incomplete_frame() {
    let logs = capture_tracing();
    let rec = Arc::new(Recorded::default());
    let server = Server::builder()
        .discover(false)
        .controller(Hostile { rec })
        .incomplete_frame_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let server = RunningServer::start(server).await;
    let mut peer = Peer::connect(&server.addr.to_string()).await.unwrap();
    let local = peer.sock.as_ref().unwrap().local_addr().unwrap();
    let started = Instant::now();
    peer.send(&cat(&[&frame(ECHO40), b"\n"])).await.unwrap();
    peer.expect_replies(&[echo40_reply()]).await.unwrap();
    peer.expect_closed().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed after {took:?}, before the timeout"
    );
    let line = logs
        .wait_for(REPLY_WITHIN, |l| {
            logs_name(l, local)
                && l.contains("closing connection: a frame stayed incomplete for 300ms")
        })
        .await;
    assert!(line.is_some(), "no timeout line for {local}");
    server.stop().await;
}

/// Every case of the matrix against real NestJS, one process, cases concurrent (each
/// writes its input in turn). Asserts Nest's actual behaviour, difference or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nest_reference_behaviour() {
    let Some(node) = require_node("nest_reference_behaviour") else {
        return;
    };
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let turn = tokio::sync::Mutex::new(());
    let target = Target::Nest {
        proc: &nest,
        turn: &turn,
    };
    let cases = all_cases();
    let results =
        futures_util::future::join_all(cases.iter().map(|case| run_case(&target, case))).await;
    let failures: Vec<String> = cases
        .iter()
        .zip(results)
        .filter_map(|(case, r)| r.err().map(|e| format!("- {:?}: {e}", case.name)))
        .collect();
    if !failures.is_empty() {
        nest.fail(&format!(
            "{} of {} cases differ from the recorded Nest behaviour:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        ));
    }
}
