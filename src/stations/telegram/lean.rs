//! Bot API answers read with only the fields metro uses (issue 14, item
//! 9): a request built with teloxide's payload (so it is sent exactly as
//! teloxide sends it), its answer decoded into a small type of its own.
//! teloxide's `Message` and `File` require fields metro never reads
//! (`date`, `chat`, `file_unique_id`, …); a Bot API server that leaves
//! them out is still good enough. Unknown fields are ignored.
//!
//! What each answer must contain: a sent message `message_id`; `getFile`
//! `file_path`; an edit or a reaction anything (`true` or a message).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use teloxide::requests::{JsonRequest, MultipartPayload, MultipartRequest, Payload};
use teloxide::types::InputFile;
use teloxide::Bot;

/// A message metro sent: its id is all metro keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct Posted {
    pub message_id: i32,
}

/// A `getFile` answer: where to download the file from. Telegram leaves
/// the path out for files bots may not download (over 20 MB).
#[derive(Debug, Clone, Deserialize)]
pub struct FilePath {
    #[serde(default)]
    pub file_path: Option<String>,
}

/// Any answer at all (edits answer a message or `true`).
pub type Anything = IgnoredAny;

/// Payload `P`, its answer read as `O`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Lean<P, O> {
    payload: P,
    #[serde(skip)]
    answer: PhantomData<fn() -> O>,
}

impl<P: Payload, O> Payload for Lean<P, O> {
    type Output = O;
    const NAME: &'static str = P::NAME;

    fn timeout_hint(&self) -> Option<std::time::Duration> {
        self.payload.timeout_hint()
    }
}

impl<P: MultipartPayload, O> MultipartPayload for Lean<P, O> {
    fn copy_files(&self, into: &mut dyn FnMut(InputFile)) {
        self.payload.copy_files(into)
    }

    fn move_files(&mut self, into: &mut dyn FnMut(InputFile)) {
        self.payload.move_files(into)
    }
}

impl<P, O> Deref for Lean<P, O> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.payload
    }
}

impl<P, O> DerefMut for Lean<P, O> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.payload
    }
}

fn lean<P, O>(payload: P) -> Lean<P, O> {
    Lean {
        payload,
        answer: PhantomData,
    }
}

/// A JSON request of `payload` whose answer is read as `O`.
pub fn json<P, O>(bot: &Bot, payload: P) -> JsonRequest<Lean<P, O>>
where
    P: Payload + Serialize,
    O: DeserializeOwned,
{
    JsonRequest::new(bot.clone(), lean(payload))
}

/// A multipart request (with files) of `payload` whose answer is read as
/// `O`.
pub fn multipart<P, O>(bot: &Bot, payload: P) -> MultipartRequest<Lean<P, O>>
where
    P: MultipartPayload + Serialize,
    O: DeserializeOwned,
{
    MultipartRequest::new(bot.clone(), lean(payload))
}
