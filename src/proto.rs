//! Wire types of protocol v1, shared by the daemon and its clients so the two
//! cannot drift: requests (one variant per op), the event object, error codes
//! and the builders for server frames.
//!
//! Requests are parsed in two steps (see [`parse_request`]): the line must be a
//! JSON object with a string `op`; `req` is lifted out untouched so it can be
//! echoed even when the rest of the request is wrong; then the op's own fields
//! are deserialized with the path of the offending field in the error message.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default cap on one request line (the `\n` excluded).
pub const DEFAULT_MAX_REQUEST: usize = 1 << 20;

/// Error codes a client can see. Nothing else ever reaches the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownOp,
    TooLarge,
    Conflict,
    NotFound,
    Unavailable,
    Upstream,
    Unauthorized,
    Limit,
    Internal,
    Loop,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Upstream => "upstream",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Limit => "limit",
            ErrorCode::Internal => "internal",
            ErrorCode::Loop => "loop",
        }
    }
}

/// An error answer: the code, a sentence for humans, and optional extra
/// fields placed inside `error` (for example `owner` on a claim `conflict`).
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for WireError {}

/// The event object: one line of `history.jsonl`, byte for byte what a
/// subscriber receives. Fields this build does not know (written by the
/// TypeScript metro, or by a newer client) are kept in `extra`, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub ts: String,
    pub station: String,
    pub kind: String,
    pub line: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
    /// How many automatic answers lead to this event (the loop guard):
    /// set by metrod; 0 (written as no field) for what people and
    /// services say.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// The client's key for a `publish`, `send`, `edit` or `react` that
    /// may be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The `event` of a `publish` request: like [`Event`], but the daemon mints
/// `id` and `ts`, derives `station` from `line`, and defaults `kind` and `to`.
/// `id`, `ts` and `station` sent by a client are ignored.
///
/// Read by hand ([`NewEventVisitor`]), not by serde's derive: with
/// `#[serde(flatten)]` for `extra`, the derive first buffers every field of
/// the object (the text included) as `Content` and then reads the known
/// ones from that copy; that was ≈ 5 % of metrod's CPU per publish.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
    /// Daemon-minted fields: accepted so a client may echo an event back,
    /// never used (named so they are not kept in `extra`; read as nothing,
    /// so they cost the parse no `Value` and the struct no room).
    #[serde(default, skip_serializing)]
    pub id: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub ts: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub station: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub hops: Option<serde::de::IgnoredAny>,
    /// Also accepted here; the request's own `idempotencyKey` is the
    /// documented place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for NewEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(NewEventVisitor)
    }
}

/// Reads a [`NewEvent`] in one pass: the named fields as the derive would
/// (camelCase keys, `null` for "absent", a repeated field refused), any
/// other key into `extra`.
struct NewEventVisitor;

impl<'de> serde::de::Visitor<'de> for NewEventVisitor {
    type Value = NewEvent;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NewEvent, A::Error> {
        use serde::de::Error;
        let mut ev = NewEvent::default();
        // `line` is required: read as a `String` (`null` is a wrong type).
        let mut line: Option<String> = None;
        let mut seen: u32 = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            // Each named field once, as the derive reads them.
            macro_rules! once {
                ($bit:expr, $name:literal, $slot:expr) => {{
                    if seen & (1 << $bit) != 0 {
                        return Err(A::Error::duplicate_field($name));
                    }
                    seen |= 1 << $bit;
                    $slot = map.next_value()?;
                }};
                ($bit:expr, $name:literal, $slot:expr, required) => {{
                    if seen & (1 << $bit) != 0 {
                        return Err(A::Error::duplicate_field($name));
                    }
                    seen |= 1 << $bit;
                    $slot = Some(map.next_value::<String>()?);
                }};
            }
            match &*key {
                "line" => once!(0, "line", line, required),
                "kind" => once!(1, "kind", ev.kind),
                "from" => once!(2, "from", ev.from),
                "to" => once!(3, "to", ev.to),
                "fromName" => once!(4, "fromName", ev.from_name),
                "text" => once!(5, "text", ev.text),
                "messageId" => once!(6, "messageId", ev.message_id),
                "replyTo" => once!(7, "replyTo", ev.reply_to),
                "emoji" => once!(8, "emoji", ev.emoji),
                "attachments" => once!(9, "attachments", ev.attachments),
                "buttons" => once!(10, "buttons", ev.buttons),
                "payload" => once!(11, "payload", ev.payload),
                "headers" => once!(12, "headers", ev.headers),
                "id" => once!(13, "id", ev.id),
                "ts" => once!(14, "ts", ev.ts),
                "station" => once!(15, "station", ev.station),
                "hops" => once!(16, "hops", ev.hops),
                "idempotencyKey" => once!(17, "idempotencyKey", ev.idempotency_key),
                _ => {
                    let value: Value = map.next_value()?;
                    ev.extra.insert(key.into_owned(), value);
                }
            }
        }
        ev.line = line.ok_or_else(|| A::Error::missing_field("line"))?;
        Ok(ev)
    }
}

/// Subscription modes of the delivery predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    All,
    Unclaimed,
    MineOnly,
    MineOrUnclaimed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Unclaimed => "unclaimed",
            Mode::MineOnly => "mine-only",
            Mode::MineOrUnclaimed => "mine-or-unclaimed",
        }
    }
}

/// When a subscription's durable cursor advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    Auto,
    Explicit,
    None,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Explicit => "explicit",
            AckMode::None => "none",
        }
    }
}

/// Where a subscription starts: `"cursor"`, `"start"`, `"tail"`, a byte
/// offset at an entry boundary, or an RFC 3339 time (the first event at or
/// after it; held as milliseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Cursor,
    Start,
    Tail,
    Offset(u64),
    Time(i128),
}

impl Serialize for Since {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Since::Cursor => s.serialize_str("cursor"),
            Since::Start => s.serialize_str("start"),
            Since::Tail => s.serialize_str("tail"),
            Since::Offset(n) => s.serialize_u64(*n),
            Since::Time(ms) => s.serialize_str(&crate::clock::format_ms(*ms)),
        }
    }
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected \"cursor\", \"start\", \"tail\", a non-negative byte offset or an RFC 3339 time",
            )
        })? {
            Raw::N(n) => Ok(Since::Offset(n)),
            Raw::S(s) => match s.as_str() {
                "cursor" => Ok(Since::Cursor),
                "start" => Ok(Since::Start),
                "tail" => Ok(Since::Tail),
                other => match (other.parse::<u64>(), crate::clock::parse_ms(other)) {
                    (Ok(n), _) => Ok(Since::Offset(n)),
                    (_, Some(ms)) => Ok(Since::Time(ms)),
                    _ => Err(serde::de::Error::custom(format!(
                        "since must be \"cursor\", \"start\", \"tail\", a byte offset or an RFC 3339 time \
                         (2026-11-28T03:00:00Z), not {other:?}"
                    ))),
                },
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    pub event: NewEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribe {
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_webhooks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Also deliver events whose `from` is `as` (default: no echo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub sub: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub sub: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub line: String,
    #[serde(rename = "as")]
    pub as_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_free: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub line: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Send {
    pub line: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_claim: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edit {
    pub line: String,
    pub message_id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_claim: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct React {
    pub line: String,
    pub message_id: String,
    pub emoji: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_claim: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    pub line: String,
    pub message_id: String,
    pub out_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetch {
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CursorQuery {
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookAdd {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookRemove {
    pub id: String,
}

/// `allow`: admit the holder of a pairing code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllowCode {
    pub code: String,
    /// Only this station's codes (default: every chat station's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// `deny`: block a platform user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DenyUser {
    #[serde(deserialize_with = "string_or_number")]
    pub user_id: String,
    /// Default: the one chat station that runs (both running: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// `allowList`: who is admitted, denied, waiting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AllowListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
}

/// A platform id sent as a string or as a JSON integer.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(i64),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a string or an integer"))?
    {
        Raw::S(s) => Ok(s),
        Raw::N(n) => Ok(n.to_string()),
    }
}

/// Defines every op once: [`OPS`] (in the order `hello` lists them), the
/// [`Request`] enum (one variant per op, serialized with its `op` tag, as
/// clients send it) and the op-to-type table [`parse_request`] reads.
macro_rules! requests {
    ($($op:literal => $variant:ident $(($ty:ty))?,)*) => {
        /// Every op the daemon knows, in the order `hello` lists them.
        pub const OPS: &[&str] = &[$($op),*];

        /// One request, without its `req` (kept beside it by [`parse_request`]).
        /// Requests are parsed once and moved a few times; boxing the large
        /// variants would cost an allocation per publish for nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, Serialize)]
        #[serde(tag = "op")]
        pub enum Request {
            $(#[serde(rename = $op)] $variant $(($ty))?,)*
        }

        impl Request {
            /// The request's `op`.
            pub fn op(&self) -> &'static str {
                match self {
                    $(requests!(@pattern $variant $(($ty))?) => $op,)*
                }
            }
        }

        /// The op's own fields read from `line`; `None` for an unknown op.
        fn parse_op(op: &str, line: &[u8]) -> Option<Result<Request, WireError>> {
            Some(match op {
                $($op => requests!(@parse line $variant $(($ty))?),)*
                _ => return None,
            })
        }
    };
    (@pattern $variant:ident ($ty:ty)) => { Request::$variant(_) };
    (@pattern $variant:ident) => { Request::$variant };
    (@parse $line:ident $variant:ident ($ty:ty)) => { field::<$ty>($line).map(Request::$variant) };
    (@parse $line:ident $variant:ident) => { Ok(Request::$variant) };
}

requests! {
    "hello" => Hello(Hello),
    "publish" => Publish(Publish),
    "subscribe" => Subscribe(Subscribe),
    "ack" => Ack(Ack),
    "unsubscribe" => Unsubscribe(Unsubscribe),
    "claim" => Claim(Claim),
    "release" => Release(Release),
    "claims" => Claims,
    "send" => Send(Send),
    "edit" => Edit(Edit),
    "react" => React(React),
    "download" => Download(Download),
    "fetch" => Fetch(Fetch),
    "history" => History(History),
    "lines" => Lines,
    "stations" => Stations,
    "stats" => Stats,
    "cursor" => Cursor(CursorQuery),
    "webhookAdd" => WebhookAdd(WebhookAdd),
    "webhookList" => WebhookList,
    "webhookRemove" => WebhookRemove(WebhookRemove),
    "allow" => Allow(AllowCode),
    "deny" => Deny(DenyUser),
    "allowList" => AllowList(AllowListQuery),
}

impl Request {
    /// The request as a JSON object, with `req` set when given.
    pub fn to_value(&self, req: Option<&Value>) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let (Some(req), Value::Object(map)) = (req, &mut v) {
            map.insert("req".into(), req.clone());
        }
        v
    }
}

/// A request line that could not be turned into a [`Request`]: the error to
/// answer with, and the `req` to echo when one could be read.
#[derive(Debug)]
pub struct ParseFailure {
    pub req: Option<Value>,
    pub error: WireError,
}

/// The two fields every request is read for first; everything else is
/// skipped here and read by the op's own type.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    op: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    req: Option<&'a serde_json::value::RawValue>,
}

/// A field that is there, even as `null`, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de serde_json::value::RawValue>, D::Error> {
    <&serde_json::value::RawValue>::deserialize(d).map(Some)
}

/// Reads the op's fields straight from the request bytes (the `op` and
/// `req` keys are ignored like any unknown field), naming the path of a
/// wrong field in the error.
fn field<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, WireError> {
    // Plain serde first: tracking the path costs ≈ 5 % of the daemon's CPU
    // under publish load (docs/benchmarks.md), and a request that parses
    // needs no path. Only a failed one is parsed again, for the message.
    let mut de = serde_json::Deserializer::from_slice(line);
    if let Ok(v) = T::deserialize(&mut de) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            WireError::bad_request(inner)
        } else {
            WireError::bad_request(format!("field `{path}`: {inner}"))
        }
    })
}

/// A `publish` request read in one pass, its envelope with its fields (the
/// hot path: [`parse_request`] otherwise reads every line twice). The same
/// fields as [`Envelope`] and [`Publish`], so a line it reads is read as
/// those two would read it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishLine<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    #[allow(dead_code)]
    op: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    req: Option<&'a serde_json::value::RawValue>,
    event: NewEvent,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// How metroctl and metro-bench write a publish (`op` first).
const PUBLISH_PREFIX: &[u8] = br#"{"op":"publish","#;

/// Parses one request line (without its `\n`): the envelope (`op`, `req`)
/// first, then the op's own type from the same bytes. No `Value` tree is
/// built on the way. A line that begins as clients write a publish is
/// read in one pass; one that does not parse that way is read the general
/// way, which words the error.
#[allow(clippy::result_large_err)]
pub fn parse_request(line: &[u8]) -> Result<(Option<Value>, Request), ParseFailure> {
    // Fields nobody reads are skipped without a look at their bytes: check
    // the whole line is UTF-8 first, as the protocol says it is.
    if let Err(e) = std::str::from_utf8(line) {
        return Err(ParseFailure {
            req: None,
            error: WireError::bad_request(format!("request is not valid UTF-8: {e}")),
        });
    }
    if line.starts_with(PUBLISH_PREFIX) {
        // `op` is a field here as in `Envelope`: a second `op` is refused
        // the same way, and the first one says `publish`.
        if let Ok(p) = serde_json::from_slice::<PublishLine>(line) {
            let req = p.req.and_then(|r| serde_json::from_str(r.get()).ok());
            // Every field named: a field added to `Publish` must be read
            // here too, or this does not compile.
            let publish = Publish {
                event: p.event,
                idempotency_key: p.idempotency_key,
            };
            return Ok((req, Request::Publish(publish)));
        }
    }
    parse_general(line)
}

/// [`parse_request`] the general way: the envelope, then the op's type.
#[allow(clippy::result_large_err)]
fn parse_general(line: &[u8]) -> Result<(Option<Value>, Request), ParseFailure> {
    let envelope: Envelope = serde_json::from_slice(line).map_err(|e| {
        let object = line
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        let message = match e.classify() {
            serde_json::error::Category::Data if !object => {
                "request must be a JSON object".to_string()
            }
            serde_json::error::Category::Data => format!("bad request: {e}"),
            _ => format!("request is not valid JSON: {e}"),
        };
        ParseFailure {
            req: None,
            error: WireError::bad_request(message),
        }
    })?;
    let req: Option<Value> = envelope
        .req
        .and_then(|r| serde_json::from_str(r.get()).ok());
    let fail = |error: WireError| ParseFailure {
        req: req.clone(),
        error,
    };
    let op: std::borrow::Cow<str> = match envelope.op {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| fail(WireError::bad_request("field `op` must be a string")))?,
        None => return Err(fail(WireError::bad_request("request has no `op` field"))),
    };
    let parsed = parse_op(&op, line).unwrap_or_else(|| {
        Err(WireError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {op:?}; `hello` lists the ops this daemon knows"),
        ))
    });
    match parsed {
        Ok(r) => Ok((req, r)),
        Err(error) => Err(ParseFailure { req, error }),
    }
}

/// `{"req":…,"ok":true,…fields}\n`
pub fn ok_frame(req: Option<&Value>, fields: Map<String, Value>) -> Vec<u8> {
    // Written field by field: no second map is built for every answer.
    ok_frame_with(req, |out| {
        for (k, v) in &fields {
            out.push(b',');
            write_json(out, k);
            out.push(b':');
            write_json(out, v);
        }
    })
}

/// A publish's answer, `{"req":…,"ok":true,"id":…,"ts":…,"offset":…}\n`:
/// [`ok_frame`] with those three fields, without building their map.
pub fn published_frame(req: Option<&Value>, id: &str, ts: &str, offset: u64) -> Vec<u8> {
    ok_frame_with(req, |out| {
        out.extend_from_slice(b",\"id\":");
        write_json(out, id);
        out.extend_from_slice(b",\"ts\":");
        write_json(out, ts);
        out.extend_from_slice(b",\"offset\":");
        write_json(out, &offset);
    })
}

/// `{"req":…,"ok":true`, then what `fields` writes (each field led by its
/// `,`), then `}\n`.
fn ok_frame_with(req: Option<&Value>, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(b'{');
    if let Some(req) = req {
        out.extend_from_slice(b"\"req\":");
        write_json(&mut out, req);
        out.push(b',');
    }
    out.extend_from_slice(b"\"ok\":true");
    fields(&mut out);
    out.extend_from_slice(b"}\n");
    out
}

/// Appends `v` as JSON. Serializing strings and `Value`s into a `Vec`
/// cannot fail; `null` stands in if it ever did.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

/// `{"req":…,"ok":false,"error":{"code":…,"message":…}}\n`
pub fn error_frame(req: Option<&Value>, err: &WireError) -> Vec<u8> {
    let mut error = Map::new();
    error.insert("code".into(), Value::String(err.code.as_str().into()));
    error.insert("message".into(), Value::String(err.message.clone()));
    error.extend(err.extra.clone());
    let mut map = Map::new();
    if let Some(req) = req {
        map.insert("req".into(), req.clone());
    }
    map.insert("ok".into(), Value::Bool(false));
    map.insert("error".into(), Value::Object(error));
    to_line(&Value::Object(map))
}

fn to_line(v: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail: all keys are strings.
    let mut out = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// Writes the head of an event frame, `{"sub":<sub>,"offset":<n>,"event":`;
/// the raw event bytes and [`EVENT_FRAME_TAIL`] follow. Frames are built by
/// concatenation so an event is serialized once, not once per subscriber.
pub fn event_frame_head(out: &mut Vec<u8>, sub_json: &[u8], offset: u64) {
    out.extend_from_slice(b"{\"sub\":");
    out.extend_from_slice(sub_json);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.extend_from_slice(b",\"event\":");
}

pub const EVENT_FRAME_TAIL: &[u8] = b"}\n";

/// `{"sub":<sub>,"gap":true,"from":<a>,"missed":<b-a>,"offset":<b>}\n`: the
/// subscription's position `a` was deleted by retention; it goes on at `b`.
pub fn gap_frame(sub_json: &[u8], from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + sub_json.len());
    out.extend_from_slice(b"{\"sub\":");
    out.extend_from_slice(sub_json);
    out.extend_from_slice(b",\"gap\":true,\"from\":");
    out.extend_from_slice(itoa::Buffer::new().format(from).as_bytes());
    out.extend_from_slice(b",\"missed\":");
    out.extend_from_slice(itoa::Buffer::new().format(to - from).as_bytes());
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(to).as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// `{"sub":<sub>,"end":true,"offset":<n>}\n`
pub fn end_frame(sub_json: &[u8], offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + sub_json.len());
    out.extend_from_slice(b"{\"sub\":");
    out.extend_from_slice(sub_json);
    out.extend_from_slice(b",\"end\":true,\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// Builds a JSON object from `key => value` pairs.
#[macro_export]
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_json::Map::new();
        $( m.insert(String::from($k), serde_json::json!($v)); )*
        m
    }};
}

/// `from` of the events the daemon writes itself (`kind: "system"`).
pub const DAEMON: &str = "metro://local/metrod";

/// Identity used as `from` when an op names no actor.
pub const ANONYMOUS: &str = "metro://local/anonymous";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_answer_is_the_ok_frame_of_its_fields() {
        for req in [
            None,
            Some(serde_json::json!(7)),
            Some(serde_json::json!("a\"b")),
            Some(serde_json::json!({"k": [1]})),
        ] {
            let (id, ts, offset) = ("msg_19acafef00d0001ab", "2026-11-30T03:54:10.123Z", 4242u64);
            assert_eq!(
                published_frame(req.as_ref(), id, ts, offset),
                ok_frame(
                    req.as_ref(),
                    fields! { "id" => id, "ts" => ts, "offset" => offset }
                )
            );
        }
    }

    #[test]
    fn a_publish_read_in_one_pass_is_read_as_the_general_way_reads_it() {
        let lines: &[&str] = &[
            r#"{"op":"publish","req":1,"event":{"line":"telegram/1","text":"hi"}}"#,
            r#"{"op":"publish","event":{"line":"telegram/1","x":{"y":[1,"\u00e9"]},"id":"m","hops":3},"idempotencyKey":"k","other":true}"#,
            r#"{"op":"publish","req":{"a":[1,2]},"idempotencyKey":"k","event":{"line":"l","idempotencyKey":"j"}}  "#,
            r#"{"op":"publish","req":null,"event":{"line":"l","text":null}}"#,
            // Refused: the general way words the error, the same either way.
            r#"{"op":"publish","req":2,"event":{"line":"l"},"op":"hello"}"#,
            r#"{"op":"publish","req":3,"event":{"line":"l"},"event":{"line":"m"}}"#,
            r#"{"op":"publish","req":4,"event":{"text":"no line"}}"#,
            r#"{"op":"publish","req":5,"event":{"line":7}}"#,
            r#"{"op":"publish","req":6}"#,
            r#"{"op":"publish","req":7,"event":{"line":"l"}} trailing"#,
            r#"{"op":"publish","req":8,"event":{"line":"l"}"#,
        ];
        for line in lines {
            let one = parse_request(line.as_bytes());
            let general = parse_general(line.as_bytes());
            match (one, general) {
                (Ok((req_a, a)), Ok((req_b, b))) => {
                    assert_eq!(req_a, req_b, "{line}");
                    assert_eq!(format!("{a:?}"), format!("{b:?}"), "{line}");
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.req, b.req, "{line}");
                    assert_eq!(a.error.code, b.error.code, "{line}");
                    assert_eq!(a.error.message, b.error.message, "{line}");
                }
                (a, b) => panic!("{line}: {:?} / {:?}", a.is_ok(), b.is_ok()),
            }
        }
        // The one-pass read is the one taken for the first lines.
        assert!(serde_json::from_slice::<PublishLine>(lines[0].as_bytes()).is_ok());
        assert!(serde_json::from_slice::<PublishLine>(lines[4].as_bytes()).is_err());
    }

    /// The hand-written `NewEvent` reader against the derive it replaced
    /// (the same struct, `#[serde(flatten)]` for `extra`): the same event
    /// from good objects, an error from the same bad ones, worded alike.
    #[test]
    fn a_new_event_is_read_as_the_derive_read_it() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Derived {
            line: String,
            #[serde(default)]
            kind: Option<String>,
            #[serde(default)]
            from: Option<String>,
            #[serde(default)]
            to: Option<String>,
            #[serde(default)]
            from_name: Option<String>,
            #[serde(default)]
            text: Option<String>,
            #[serde(default)]
            message_id: Option<String>,
            #[serde(default)]
            reply_to: Option<String>,
            #[serde(default)]
            emoji: Option<String>,
            #[serde(default)]
            attachments: Option<Vec<Value>>,
            #[serde(default)]
            buttons: Option<Value>,
            #[serde(default)]
            payload: Option<Value>,
            #[serde(default)]
            headers: Option<Map<String, Value>>,
            #[serde(default)]
            id: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            ts: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            station: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            hops: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            idempotency_key: Option<String>,
            #[serde(flatten)]
            extra: Map<String, Value>,
        }
        let good = [
            r#"{"line":"telegram/1","text":"hi"}"#,
            r#"{"text":"first","line":"l","kind":"reply","from":"metro://a/b","to":"metro://c/d","fromName":"A","messageId":"9","replyTo":"msg_1","emoji":"👍","attachments":[{"a":1}],"buttons":[[1]],"payload":{"p":[1,2]},"headers":{"h":"v"},"id":"x","ts":5,"station":null,"hops":{"deep":[1]},"idempotencyKey":"k","zz":1,"aa":{"b":null}}"#,
            r#"{"line":"l","text":null,"kind":null,"payload":null,"te\u0078t2":"escaped key"}"#,
            r#"{"line":"l","x":1,"x":2}"#,
        ];
        for text in good {
            let ours: NewEvent =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let theirs: Derived = serde_json::from_str(text).unwrap();
            assert_eq!(ours.line, theirs.line);
            assert_eq!(
                (
                    &ours.kind,
                    &ours.from,
                    &ours.to,
                    &ours.from_name,
                    &ours.text
                ),
                (
                    &theirs.kind,
                    &theirs.from,
                    &theirs.to,
                    &theirs.from_name,
                    &theirs.text
                ),
                "{text}"
            );
            assert_eq!(
                (
                    &ours.message_id,
                    &ours.reply_to,
                    &ours.emoji,
                    &ours.idempotency_key
                ),
                (
                    &theirs.message_id,
                    &theirs.reply_to,
                    &theirs.emoji,
                    &theirs.idempotency_key
                ),
                "{text}"
            );
            assert_eq!(
                (
                    &ours.attachments,
                    &ours.buttons,
                    &ours.payload,
                    &ours.headers
                ),
                (
                    &theirs.attachments,
                    &theirs.buttons,
                    &theirs.payload,
                    &theirs.headers
                ),
                "{text}"
            );
            assert_eq!(
                (
                    ours.id.is_some(),
                    ours.ts.is_some(),
                    ours.station.is_some(),
                    ours.hops.is_some()
                ),
                (
                    theirs.id.is_some(),
                    theirs.ts.is_some(),
                    theirs.station.is_some(),
                    theirs.hops.is_some()
                ),
                "{text}"
            );
            // The same unknown keys, in the same order.
            assert_eq!(
                serde_json::to_string(&ours.extra).unwrap(),
                serde_json::to_string(&theirs.extra).unwrap(),
                "{text}"
            );
        }
        let bad = [
            r#"{"text":"no line"}"#,
            r#"{"line":null}"#,
            r#"{"line":7}"#,
            r#"{"line":"l","text":3}"#,
            r#"{"line":"l","attachments":{"a":1}}"#,
            r#""just a string""#,
            r#"[1,2]"#,
            r#"{"line":"l","text":"a","text":"b"}"#,
            r#"{"line":"l","line":"m"}"#,
        ];
        for text in bad {
            let ours = serde_json::from_str::<NewEvent>(text)
                .map(|_| ())
                .unwrap_err();
            let theirs = serde_json::from_str::<Derived>(text)
                .map(|_| ())
                .unwrap_err();
            // The derive's "expected struct Derived" names its own type.
            let theirs = theirs
                .to_string()
                .replace("struct Derived", "an event object");
            assert_eq!(ours.to_string(), theirs, "{text}");
        }
    }

    #[test]
    fn parse_errors_echo_req_and_name_the_field() {
        let e = parse_request(br#"{"op":"ack","req":7,"sub":"s1","offset":"x"}"#).unwrap_err();
        assert_eq!(e.req, Some(Value::from(7)));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert!(e.error.message.contains("offset"), "{}", e.error.message);
    }

    #[test]
    fn since_takes_words_offsets_and_times() {
        let since = |v: Value| serde_json::from_value::<Since>(v);
        assert_eq!(since(Value::from("tail")).unwrap(), Since::Tail);
        assert_eq!(since(Value::from(42)).unwrap(), Since::Offset(42));
        assert_eq!(since(Value::from("42")).unwrap(), Since::Offset(42));
        let t = since(Value::from("2026-11-28T04:00:00+01:00")).unwrap();
        assert_eq!(
            t,
            Since::Time(crate::clock::parse_ms("2026-11-28T03:00:00Z").unwrap())
        );
        // Sent back as a UTC time with milliseconds.
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            Value::from("2026-11-28T03:00:00.000Z")
        );
        let e = since(Value::from("2026-13-45T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RFC 3339") && e.contains("2026-13-45"), "{e}");
    }
}
