//! The panel's actions, each behind a confirmation page: reboot a node, remove it, restart one
//! of its watched systemd units, set an alert threshold for the whole network. The page (GET)
//! and the confirmation (POST) go through the same checks in the same order ([`checked`]): on
//! the POST the CSRF token and the origin, then the role, then the node; only the POST acts.

// A refusal is the page that answers the request, handed straight back to axum by the handler:
// boxing it would only add an allocation on the refusal path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use constella_behaviours::alerts::{Rule, parse_percent};
use constella_behaviours::membership::MemberView;
use constella_behaviours::rpc::{ServicesRequest, unit_name};
use serde::Deserialize;

use super::pages::{self, Confirm};
use super::{
    Authed, CsrfForm, Inner, VIA_WEB, find_member, frame, html, html_status, not_allowed,
    refuse_post,
};
use crate::access::Action;
use crate::audit::{AuditEvent, AuditKind};
use crate::bot::ui::{self, Lang};

/// Longest wait for a unit's restart (the node's `systemctl` may take 30 s).
const RESTART_TIMEOUT: Duration = Duration::from_secs(40);

/// The checks of an action (`label` in the audit log, allowed by `action`), in this order: on
/// the POST (`post`: its headers and CSRF field) the token and the origin; the role. The
/// refusal is audited.
fn checked(
    inner: &Inner,
    authed: &Authed,
    (label, action): (&str, Action),
    post: Option<(&HeaderMap, &str)>,
) -> Result<(), Response> {
    if let Some((headers, csrf)) = post
        && let Some(refusal) = refuse_post(inner, authed, headers, csrf, label)
    {
        return Err(refusal);
    }
    if !authed.rank.allows(action) {
        return Err(not_allowed(inner, authed, label));
    }
    Ok(())
}

/// How a change of an alert threshold is checked.
const ALERTS: (&str, Action) = ("alerts", Action::Alerts);

/// [`checked`], then the node `node` as this node sees it.
async fn checked_node(
    inner: &Inner,
    authed: &Authed,
    what: Confirm<'_>,
    node: &str,
    post: Option<(&HeaderMap, &str)>,
) -> Result<MemberView, Response> {
    checked(inner, authed, (what.name(), what.action()), post)?;
    find_member(inner, authed, node).await
}

/// The confirmation page of `what` on `node`, for a role that may do it.
async fn confirm_node(inner: &Inner, authed: &Authed, what: Confirm<'_>, node: &str) -> Response {
    match checked_node(inner, authed, what, node, None).await {
        Ok(_) => html(pages::confirm(&frame(inner, authed), what)),
        Err(response) => response,
    }
}

/// A result page with a way back to `back`.
fn outcome(
    inner: &Inner,
    authed: &Authed,
    status: StatusCode,
    title: &str,
    text: &str,
    back: &str,
) -> Response {
    html_status(
        status,
        pages::message(&frame(inner, authed), title, text, back),
    )
}

/// A node's action, from the rest of its path: `reboot`, `remove`, `restart/UNIT`.
#[derive(Debug)]
enum NodeAction {
    Reboot,
    Remove,
    /// The unit as systemd takes it.
    Restart(String),
}

impl NodeAction {
    /// `None`: no such page; `Some(Err)`: a unit name that is not one, and why.
    fn parse(rest: &str) -> Option<Result<Self, String>> {
        match rest.split_once('/') {
            None if rest == "reboot" => Some(Ok(Self::Reboot)),
            None if rest == "remove" => Some(Ok(Self::Remove)),
            Some(("restart", unit)) => Some(unit_name(unit).map(Self::Restart)),
            _ => None,
        }
    }

    fn confirm<'a>(&'a self, node: &'a str) -> Confirm<'a> {
        match self {
            Self::Reboot => Confirm::Reboot { node },
            Self::Remove => Confirm::Remove { node },
            Self::Restart(unit) => Confirm::Restart { node, unit },
        }
    }
}

/// The action `/node/NAME/REST` names, or the page that answers instead (404, or 400 naming
/// what is wrong with a unit's name).
async fn node_action(
    inner: Arc<Inner>,
    authed: &Authed,
    (name, rest): (&str, &str),
) -> Result<NodeAction, Response> {
    match NodeAction::parse(rest) {
        Some(Ok(action)) => Ok(action),
        Some(Err(error)) => {
            let title = authed.lang.pick("Службы", "Services");
            let back = format!("/node/{name}");
            Err(outcome(
                &inner,
                authed,
                StatusCode::BAD_REQUEST,
                title,
                &error,
                &back,
            ))
        }
        None => Err(super::not_found(State(inner)).await),
    }
}

/// `GET /node/NAME/reboot|remove|restart/UNIT`: the confirmation page.
pub(super) async fn node_confirm(
    State(inner): State<Arc<Inner>>,
    UrlPath((name, rest)): UrlPath<(String, String)>,
    authed: Authed,
) -> Response {
    match node_action(inner.clone(), &authed, (&name, &rest)).await {
        Ok(action) => confirm_node(&inner, &authed, action.confirm(&name), &name).await,
        Err(response) => response,
    }
}

/// `POST /node/NAME/reboot|remove|restart/UNIT`: the confirmed action, after the checks.
pub(super) async fn node_act(
    State(inner): State<Arc<Inner>>,
    UrlPath((name, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
    authed: Authed,
    Form(form): Form<CsrfForm>,
) -> Response {
    let action = match node_action(inner.clone(), &authed, (&name, &rest)).await {
        Ok(action) => action,
        Err(response) => return response,
    };
    let post = Some((&headers, form.csrf.as_str()));
    let what = action.confirm(&name);
    let peer = match checked_node(&inner, &authed, what, &name, post).await {
        Ok(peer) => peer,
        Err(response) => return response,
    };
    match action {
        NodeAction::Reboot => reboot(&inner, &authed, &peer).await,
        NodeAction::Remove => remove(&inner, &authed, &peer).await,
        NodeAction::Restart(unit) => restart(&inner, &authed, &peer, unit).await,
    }
}

async fn reboot(inner: &Inner, authed: &Authed, peer: &MemberView) -> Response {
    let lang = authed.lang;
    let who = authed.who();
    let back = format!("/node/{}", peer.name);
    let asked = AuditEvent::new(AuditKind::RebootRequested, who.clone(), VIA_WEB)
        .detail("target", peer.name.clone())
        .detail("node_id", peer.node_id.to_base58())
        .detail("role", authed.rank.as_str());
    // On disk before the request leaves: the machine that reboots may be this one.
    if let Err(error) = inner.ctx.audit.append(asked.clone()).await {
        let title = lang.pick("Не перезагружено", "Not rebooted");
        let text = format!("audit log: {error}");
        return outcome(
            inner,
            authed,
            StatusCode::INTERNAL_SERVER_ERROR,
            title,
            &text,
            &back,
        );
    }
    let result = inner
        .ctx
        .client
        .reboot(&peer.node_id.to_base58(), &format!("web panel: {who}"))
        .await;
    let (status, title, text) = match &result {
        Ok(accepted) => (
            StatusCode::OK,
            lang.pick("Перезагрузка", "Reboot"),
            ui::reboot_accepted(lang, &accepted.name),
        ),
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            lang.pick("Не перезагружено", "Not rebooted"),
            ui::action_failed(lang, &peer.name, error),
        ),
    };
    let result = result.map(|_| ()).map_err(|e| e.to_string());
    inner.ctx.audit.record(with_outcome(asked, &result));
    outcome(inner, authed, status, title, &text, &back)
}

/// `event` with the `outcome` detail: `accepted`, or `failed: …`.
fn with_outcome(event: AuditEvent, result: &Result<(), String>) -> AuditEvent {
    let outcome = match result {
        Ok(()) => "accepted".to_owned(),
        Err(error) => format!("failed: {error}"),
    };
    event.detail("outcome", outcome)
}

async fn remove(inner: &Inner, authed: &Authed, peer: &MemberView) -> Response {
    let lang = authed.lang;
    let (status, text) = match inner.ctx.client.remove(&peer.node_id.to_base58()).await {
        Ok(removed) => {
            inner.ctx.audit.record(
                AuditEvent::new(AuditKind::NodeRemoved, authed.who(), VIA_WEB)
                    .detail("target", removed.clone()),
            );
            (
                StatusCode::OK,
                match lang {
                    Lang::Ru => format!("{removed} удалён из сети; секрет сети сменён."),
                    Lang::En => format!("{removed} is removed; the network secret is rotated."),
                },
            )
        }
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            ui::action_failed(lang, &peer.name, &error),
        ),
    };
    let title = lang.pick("Удаление узла", "Removing a node");
    outcome(inner, authed, status, title, &text, "/")
}

async fn restart(inner: &Inner, authed: &Authed, peer: &MemberView, unit: String) -> Response {
    let lang = authed.lang;
    let back = format!("/node/{}", peer.name);
    let asked = AuditEvent::new(AuditKind::ServiceRestartRequested, authed.who(), VIA_WEB)
        .detail("target", peer.name.clone())
        .detail("unit", unit.clone())
        .detail("role", authed.rank.as_str());
    let request = ServicesRequest::Restart { unit };
    // The target checks the role again itself, from its own copy of the settings.
    let by = authed.session.principal.requester();
    let call = inner.ctx.client.services(&peer.name, request, by);
    let result = match tokio::time::timeout(RESTART_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {} s",
            peer.name,
            RESTART_TIMEOUT.as_secs()
        )),
    };
    inner.ctx.audit.record(with_outcome(
        asked,
        &result.as_ref().map(|_| ()).map_err(Clone::clone),
    ));
    let title = lang.pick("Службы", "Services");
    match result {
        Ok(answer) => outcome(
            inner,
            authed,
            StatusCode::OK,
            title,
            &ui::services(lang, &answer, true),
            &back,
        ),
        Err(error) => outcome(
            inner,
            authed,
            StatusCode::BAD_GATEWAY,
            title,
            &ui::action_failed_text(lang, &peer.name, &error),
            &back,
        ),
    }
}

/// `/alerts`: every rule's threshold and the open episodes, from this node's copy of the
/// network settings (no request leaves the node).
pub(super) async fn alerts_page(State(inner): State<Arc<Inner>>, authed: Authed) -> Response {
    if !authed.rank.allows(Action::List) {
        return not_allowed(&inner, &authed, Action::List.as_str());
    }
    let alerts = inner.ctx.settings.borrow().alerts.clone();
    html(pages::alerts(&frame(&inner, &authed), &alerts))
}

/// A rule and a threshold from a form: the alerts form (GET) or its confirmation (POST).
#[derive(Debug, Deserialize)]
pub(super) struct AlertForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    percent: String,
}

/// The change the form asks for, or the page that says what is wrong with it.
fn alert_change(
    inner: &Inner,
    authed: &Authed,
    form: &AlertForm,
) -> Result<Confirm<'static>, Response> {
    let parsed = form.rule.parse::<Rule>().and_then(|rule| {
        if rule == Rule::Traffic {
            return Err(
                "the traffic quota is set with `constella alerts set traffic` or the bot's /alerts"
                    .to_owned(),
            );
        }
        Ok((rule, parse_percent(form.percent.trim())?))
    });
    match parsed {
        Ok((rule, percent)) => Ok(Confirm::Alert {
            rule,
            percent,
            previous: inner.ctx.settings.borrow().alerts.percent(rule),
        }),
        Err(error) => {
            let title = authed.lang.pick("Оповещения", "Alerts");
            let status = StatusCode::BAD_REQUEST;
            Err(outcome(inner, authed, status, title, &error, "/alerts"))
        }
    }
}

/// `GET /alerts/set?rule=cpu&percent=90`: the confirmation step.
pub(super) async fn alert_confirm(
    State(inner): State<Arc<Inner>>,
    authed: Authed,
    Query(form): Query<AlertForm>,
) -> Response {
    let checks =
        checked(&inner, &authed, ALERTS, None).and_then(|()| alert_change(&inner, &authed, &form));
    match checks {
        Ok(what) => html(pages::confirm(&frame(&inner, &authed), what)),
        Err(response) => response,
    }
}

/// `POST /alerts/set`: sets the threshold for every node, audited (on disk before the answer).
pub(super) async fn alert_set(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    authed: Authed,
    Form(form): Form<AlertForm>,
) -> Response {
    let post = Some((&headers, form.csrf.as_str()));
    let checks =
        checked(&inner, &authed, ALERTS, post).and_then(|()| alert_change(&inner, &authed, &form));
    let (rule, percent) = match checks {
        Ok(Confirm::Alert { rule, percent, .. }) => (rule, percent),
        Ok(_) => return not_allowed(&inner, &authed, ALERTS.0),
        Err(response) => return response,
    };
    let lang = authed.lang;
    let title = lang.pick("Оповещения", "Alerts");
    let current = inner.ctx.settings.borrow().alerts.clone();
    let client = &inner.ctx.client;
    let set = crate::monitor::alerts::set_threshold(
        client,
        &current,
        (rule, percent),
        authed.who(),
        VIA_WEB,
    )
    .await;
    let (status, text) = match set {
        Ok((merged, event)) => match inner.ctx.audit.append(event).await {
            Ok(()) => (StatusCode::OK, ui::alerts(lang, &merged.alerts)),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the threshold was set but could not be audited: {error}"),
            ),
        },
        Err(error) => (StatusCode::BAD_GATEWAY, ui::node_error(lang, &error)),
    };
    outcome(&inner, &authed, status, title, &text, "/alerts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_action_is_named_by_the_rest_of_its_path() {
        assert!(matches!(
            NodeAction::parse("reboot"),
            Some(Ok(NodeAction::Reboot))
        ));
        assert!(matches!(
            NodeAction::parse("remove"),
            Some(Ok(NodeAction::Remove))
        ));
        match NodeAction::parse("restart/nginx") {
            Some(Ok(NodeAction::Restart(unit))) => assert_eq!(unit, "nginx.service"),
            other => panic!("{other:?}"),
        }
        let bad = NodeAction::parse("restart/x;reboot").unwrap().unwrap_err();
        assert!(bad.contains("invalid unit name"), "{bad}");
        for none in ["", "other", "reboot/now", "remove/x", "restart"] {
            assert!(NodeAction::parse(none).is_none(), "{none}");
        }
    }
}
