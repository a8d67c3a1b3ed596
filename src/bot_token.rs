//! Bot-token propagation: `constella bot-token set` on one member stores the token there and
//! puts a [`BotTokenStamp`] (version, digest, that node) into the network settings; every
//! other member, now or when it comes back, sees a stamp that its own token does not match and
//! fetches the token from a member (`RpcRequest::GetBotToken`, answered to members only, sealed
//! to the asking member's PQ4 card and opened only if the answering member's PQ4 identity sealed
//! it: `seal_token` / `open_token` in `src/daemon/rpc.rs`), checks it against the digest, stores
//! it (`bot.token`, 0600) and restarts its bot with it. The token itself never enters the
//! settings, the gossip, a log line or the audit log.

use std::time::Duration;

use constella_behaviours::membership::Status;
use constella_behaviours::settings::{BotTokenStamp, NetworkSettings, token_digest};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::daemon::Client;
use crate::state::{StateDir, StoredSecret};

/// First pause after a failed fetch; doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest pause between fetches while the token is out of date.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Whether `token` is the one `stamp` names.
pub fn matches(stamp: &BotTokenStamp, token: Option<&StoredSecret>) -> bool {
    token.is_some_and(|token| token_digest(token.expose()) == stamp.digest)
}

/// Keeps this node's bot token equal to the one the network settings name, until the node
/// stops.
pub async fn follow(
    client: Client,
    mut settings: watch::Receiver<NetworkSettings>,
    tokens: watch::Sender<Option<StoredSecret>>,
    state_dir: StateDir,
    audit: AuditLog,
    local_id: String,
) {
    let mut pause = RETRY_MIN;
    loop {
        let wanted = settings.borrow_and_update().bot_token.clone();
        let stale = wanted
            .as_ref()
            .filter(|stamp| !matches(stamp, tokens.borrow().as_ref()));
        if let Some(stamp) = stale {
            match fetch(&client, stamp, &local_id).await {
                Some((token, from)) => {
                    pause = RETRY_MIN;
                    if let Err(error) = state_dir.save_bot_token(token.expose()) {
                        warn!(
                            error = format!("{error:#}"),
                            "the new bot token cannot be stored; it is used until the node stops"
                        );
                    }
                    audit.record(
                        AuditEvent::new(
                            AuditKind::BotTokenChanged,
                            format!("node:{from}"),
                            "network",
                        )
                        .detail("bot_id", stamp.bot_id.clone())
                        .detail("version", stamp.version)
                        .detail("set_on", stamp.from.clone()),
                    );
                    info!(bot_id = %stamp.bot_id, version = stamp.version, %from, "received the network's new bot token; the bot starts again with it");
                    tokens.send_replace(Some(token));
                    continue;
                }
                None => {
                    debug!(
                        version = stamp.version,
                        "the new bot token could not be fetched yet; retrying"
                    );
                    tokio::select! {
                        changed = settings.changed() => if changed.is_err() { return },
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        if settings.changed().await.is_err() {
            return;
        }
    }
}

/// The token `stamp` names, from the node it was set on or else any member that answers with
/// it; with the node that gave it.
async fn fetch(
    client: &Client,
    stamp: &BotTokenStamp,
    local_id: &str,
) -> Option<(StoredSecret, String)> {
    let mut candidates = vec![stamp.from.clone()];
    if let Ok(peers) = client.peers().await {
        candidates.extend(
            peers
                .iter()
                .filter(|p| p.status == Status::Alive)
                .map(|p| p.node_id.to_base58())
                .filter(|id| *id != stamp.from),
        );
    }
    for target in candidates.into_iter().filter(|id| id != local_id) {
        match client.bot_token_of(&target).await {
            Ok(Some(token)) if token_digest(token.expose()) == stamp.digest => {
                return Some((StoredSecret::new(token.expose().to_owned()), target));
            }
            Ok(_) => debug!(%target, "that member does not have the new bot token yet"),
            Err(error) => debug!(%target, %error, "cannot fetch the bot token"),
        }
    }
    None
}
