//! The `📈` chart of a node: the leader asks the node for its history (`GetHistory`), draws it
//! off the async runtime (src/monitor/chart.rs) and sends it with `sendPhoto`.

use std::time::{Duration, Instant};

use teloxide::prelude::*;
use teloxide::types::{CallbackQuery, InputFile};
use tracing::{info, warn};

use super::{Handlers, bounded};
use crate::bot::callback::ChartRange;
use crate::bot::ui::{self, Lang, Screen};
use crate::monitor::chart::{self, CHART_METRICS};
use crate::state::unix_now;
use constella_behaviours::membership::MemberView;

/// Most time drawing may take before the press is answered with a failure.
const RENDER_TIMEOUT: Duration = Duration::from_secs(20);

impl Handlers {
    pub(super) async fn on_chart(
        &self,
        query: &CallbackQuery,
        lang: Lang,
        peer: &MemberView,
        range: ChartRange,
    ) {
        if !peer.is_alive() {
            self.answer(query, Some(&ui::toast_offline(lang, &peer.name)))
                .await;
            return;
        }
        self.answer(query, None).await;
        let Some(chat) = query.message.as_ref().map(|m| m.chat().id) else {
            return;
        };
        let metrics = CHART_METRICS.iter().map(|m| (*m).to_owned()).collect();
        let node_id = peer.node_id.to_base58();
        let history = match bounded(self.client.history(&node_id, metrics, range.secs())).await {
            Ok(history) => history,
            Err(error) => {
                let text = ui::action_failed(lang, &peer.name, &error);
                self.send(chat, Screen::text(text)).await;
                return;
            }
        };
        let heading = format!("{} — {}", peer.name, ui::chart_range(lang, range));
        let titles = ui::chart_titles(lang);
        let started = Instant::now();
        let drawing = tokio::task::spawn_blocking(move || {
            chart::render(&history, &heading, titles, range.secs(), unix_now())
        });
        let png = match tokio::time::timeout(RENDER_TIMEOUT, drawing).await {
            Ok(Ok(Ok(png))) => png,
            failure => {
                warn!(?failure, "cannot draw a chart");
                let text = match lang {
                    Lang::Ru => format!("Не удалось построить график {}.", peer.name),
                    Lang::En => format!("Could not draw the chart of {}.", peer.name),
                };
                self.send(chat, Screen::text(text)).await;
                return;
            }
        };
        info!(
            node = %peer.name,
            range_secs = range.secs(),
            bytes = png.len(),
            render_ms = started.elapsed().as_millis() as u64,
            "sending a chart"
        );
        let photo = InputFile::memory(png).file_name(format!("{}.png", peer.name));
        let caption = format!("📈 {} — {}", peer.name, ui::chart_range(lang, range));
        if let Err(error) = self.bot.send_photo(chat, photo).caption(caption).await {
            warn!(%error, "cannot send a chart");
        }
    }
}
