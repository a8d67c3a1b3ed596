//! Clients waiting for the core: an invite is handed out only once its record is durable, and
//! a leave answers when the core says it is done. The loop parks the reply channels here and
//! answers them when the matching core output arrives.

use std::collections::HashMap;

use constella_behaviours::node::LeaveOutcome;
use tokio::sync::oneshot;
use tracing::info;

use super::error::ClientError;
use super::report::InviteReport;

type InviteReply = oneshot::Sender<Result<InviteReport, ClientError>>;
type LeaveReply = oneshot::Sender<Result<LeaveOutcome, ClientError>>;

/// Reply channels waiting for the core.
#[derive(Default)]
pub(super) struct Replies {
    invites: HashMap<u64, (InviteReport, InviteReply)>,
    next_request: u64,
    leave: Option<LeaveReply>,
}

impl Replies {
    /// Parks an invite's report until the core has recorded it; answers the request number
    /// to give the core.
    pub(super) fn invite(&mut self, report: InviteReport, reply: InviteReply) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        self.invites.insert(request, (report, reply));
        request
    }

    /// The core recorded invite `request` (or could not): hands out the link or the error.
    pub(super) fn invite_recorded(&mut self, request: u64, result: Result<(), String>) {
        if let Some((report, reply)) = self.invites.remove(&request) {
            if result.is_ok() {
                info!(ttl = %report.ttl, expires_at = report.expires_at, "invite issued");
            }
            let _ = reply.send(result.map(|()| report).map_err(ClientError::Storage));
        }
    }

    /// Parks a leave's reply; refuses a second one while the first is under way (answers
    /// false, having told the client).
    pub(super) fn leave(&mut self, reply: LeaveReply) -> bool {
        if self.leave.is_some() {
            let _ = reply.send(Err(ClientError::Invalid(
                "a leave is already under way".to_owned(),
            )));
            return false;
        }
        self.leave = Some(reply);
        true
    }

    /// The core finished the leave.
    pub(super) fn leave_done(&mut self, result: Result<LeaveOutcome, String>) {
        if let Some(reply) = self.leave.take() {
            let _ = reply.send(result.map_err(ClientError::Storage));
        }
    }
}
