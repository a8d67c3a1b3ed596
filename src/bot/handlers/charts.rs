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
    /// `/overview [1h|24h|7d]`: CPU, RAM and disk of every alive node (at most eight) in one
    /// PNG, each node's history asked of it (`GetHistory`).
    pub(super) async fn on_overview(&self, chat: ChatId, lang: Lang, arg: &str) {
        let range = match arg.trim() {
            "" | "1h" | "1ч" => ChartRange::Hour,
            "24h" | "1d" | "24ч" => ChartRange::Day,
            "7d" | "7д" => ChartRange::Week,
            _ => {
                let text = lang.pick_owned(
                    "Использование: /overview [1h|24h|7d]",
                    "Usage: /overview [1h|24h|7d]",
                );
                self.send(chat, Screen::text(text)).await;
                return;
            }
        };
        let peers = match bounded(self.client.peers()).await {
            Ok(peers) => peers,
            Err(error) => {
                self.send(chat, Screen::text(ui::node_error(lang, &error)))
                    .await;
                return;
            }
        };
        let metrics: Vec<String> = [
            "cpu_percent",
            "ram_used_bytes",
            "ram_total_bytes",
            "disk_used_percent:/",
        ]
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
        let asks = peers
            .iter()
            .filter(|p| p.is_alive())
            .take(chart::MAX_OVERVIEW_NODES)
            .map(|p| {
                let (client, metrics, id) =
                    (self.client.clone(), metrics.clone(), p.node_id.to_base58());
                async move { bounded(client.history(&id, metrics, range.secs())).await }
            });
        let histories: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let heading = format!(
            "{} — {}",
            lang.pick_owned("Обзор сети", "Network overview"),
            ui::chart_range(lang, range)
        );
        let titles = ui::chart_titles(lang);
        let started = Instant::now();
        let drawing = tokio::task::spawn_blocking(move || {
            chart::render_overview(&histories, &heading, titles, range.secs(), unix_now())
        });
        let png = match tokio::time::timeout(RENDER_TIMEOUT, drawing).await {
            Ok(Ok(Ok(png))) => png,
            failure => {
                warn!(?failure, "cannot draw the overview");
                let text = lang.pick_owned(
                    "Не удалось построить обзор.",
                    "Could not draw the overview.",
                );
                self.send(chat, Screen::text(text)).await;
                return;
            }
        };
        info!(
            bytes = png.len(),
            render_ms = started.elapsed().as_millis() as u64,
            "sending the overview chart"
        );
        let photo = InputFile::memory(png).file_name("overview.png");
        let caption = format!("📈 {}", lang.pick_owned("Обзор сети", "Network overview"));
        if let Err(error) = self.bot.send_photo(chat, photo).caption(caption).await {
            warn!(%error, "cannot send the overview chart");
        }
    }

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
            member = %peer.name,
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
