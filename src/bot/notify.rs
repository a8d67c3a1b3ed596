//! Tells the owner about membership events: leader changes, nodes offline or back, nodes that
//! join or leave.
//!
//! Only the leader's event loop emits them, and a leader change is announced by exactly one
//! bot: the new leader's when it saw the old one lead (failover), otherwise the old leader's
//! (a better node joined or came back), so two nodes never send the same notice. They are batched and rate-limited: the
//! first event opens a short window that collects what follows (a failover is one message, not
//! three), messages are at least [`MIN_GAP`] apart, and one message lists at most
//! [`MAX_LINES`] events.

use std::time::Duration;

use constella_behaviours::settings::NetworkSettings;
use teloxide::prelude::*;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ui::{self, Lang};
use crate::daemon::signals::{Leadership, NetworkEvent};

/// How long after the first event more are collected into the same message.
const BATCH_WINDOW: Duration = Duration::from_secs(2);
/// Least time between two notifications.
const MIN_GAP: Duration = Duration::from_secs(10);
/// Events listed in one message; the rest are counted.
const MAX_LINES: usize = 20;
/// Events kept while waiting; older ones beyond this are dropped (and counted as "more").
const MAX_PENDING: usize = 200;

/// Sends batched notices to the owner until the node stops.
pub(super) async fn run(
    bot: Bot,
    mut notices: broadcast::Receiver<NetworkEvent>,
    leadership: watch::Receiver<Leadership>,
    settings: watch::Receiver<NetworkSettings>,
    node_name: String,
) {
    let mut last_sent: Option<Instant> = None;
    loop {
        let first = match notices.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, "notices were dropped: the bot fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let mut batch = vec![first];
        let mut dropped = 0usize;
        let window_end = Instant::now() + BATCH_WINDOW;
        let send_at = last_sent.map_or(window_end, |at| window_end.max(at + MIN_GAP));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(send_at) => break,
                event = notices.recv() => match event {
                    Ok(event) if batch.len() < MAX_PENDING => {
                        if batch.last() != Some(&event) {
                            batch.push(event);
                        }
                    }
                    Ok(_) => dropped += 1,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        dropped += usize::try_from(missed).unwrap_or(usize::MAX);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
        // A former leader speaks only if it handed over in this batch (see `supervise`): then
        // the new leader never saw these events as leader, and this node is the one to tell.
        let handed_over = batch
            .iter()
            .any(|e| matches!(e, NetworkEvent::LeaderChanged { from, .. } if *from == node_name));
        if !leadership.borrow().is_local && !handed_over {
            debug!("not leading any more: notices left to the new leader");
            continue;
        }
        let (owner, lang) = {
            let settings = settings.borrow();
            (settings.owner_user_id, Lang::from_code(&settings.language))
        };
        let Some(owner) = owner.and_then(|id| i64::try_from(id).ok()) else {
            debug!("no owner pinned yet: nobody to notify");
            continue;
        };
        let mut text = ui::notification(lang, &batch, MAX_LINES);
        if dropped > 0 && batch.len() <= MAX_LINES {
            text.push_str(&match lang {
                Lang::Ru => format!("\n…и ещё {dropped}"),
                Lang::En => format!("\n…and {dropped} more"),
            });
        }
        last_sent = Some(Instant::now());
        debug!(events = batch.len(), "notifying the owner");
        if let Err(error) = bot.send_message(ChatId(owner), text).await {
            warn!(%error, "cannot send a notification to the owner");
        }
    }
}
