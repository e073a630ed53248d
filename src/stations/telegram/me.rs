//! `getMe`, read with only the fields metro uses (`id`, `username`,
//! `first_name`): some Bot API servers (emulators, older self-hosted ones)
//! answer with no more, and teloxide's own `Me` requires every field.

use serde::{Deserialize, Serialize};
use teloxide::requests::{JsonRequest, Payload};
use teloxide::{Bot, RequestError};

#[derive(Debug, Clone, Serialize)]
struct GetMe {}

/// The bot, as far as metro cares.
#[derive(Debug, Clone, Deserialize)]
pub struct BotIdentity {
    pub id: u64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: String,
}

impl Payload for GetMe {
    type Output = BotIdentity;
    const NAME: &'static str = "getMe";
}

/// Asks the Bot API who this bot is.
pub async fn get_me(bot: &Bot) -> Result<BotIdentity, RequestError> {
    JsonRequest::new(bot.clone(), GetMe {}).await
}
