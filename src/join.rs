//! The joiner's side of Join: dial the seed with its PeerId pinned, present the token, and on
//! acceptance write the new node's key and state, then confirm to the seed that the state is
//! written (the seed undoes an admission that is never confirmed, so a joiner that dies before
//! it writes leaves no member behind and its token usable). Nothing is written unless the seed
//! accepts.
//!
//! Test knob: with `CONSTELLA_TEST_JOIN_ABORT_BEFORE_WRITE=1` in the environment the joiner
//! aborts (as if killed) after the seed's answer and before it writes anything; the real-process
//! test of undone admissions uses it. It has no other effect.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use constella_behaviours::NetworkSecret;
use constella_behaviours::join::{
    self, JoinAccepted, JoinRefusal, JoinRequest, JoinSecrets, JoinStep,
};
use constella_behaviours::network_keys::{self, Pq4Card, Purpose};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure};
use libp2p::swarm::{DialError, SwarmEvent};

use crate::daemon::build_swarm;
use crate::link::JoinLink;
use crate::state::{LocalNode, NetworkState, STATE_FORMAT, StateDir, StoredSecret};
use crate::validate::{HostPort, ServerName};

/// How long the whole join may take.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// Connections to the seed tried before a lost one fails the join.
const JOIN_ATTEMPTS: u32 = 10;

/// The pause before dialling the seed again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long the joiner waits for the seed to take its confirmation (well inside the seed's
/// 15 s bound).
const CONFIRM_DEADLINE: Duration = Duration::from_secs(5);

/// See the module documentation.
const ABORT_BEFORE_WRITE: &str = "CONSTELLA_TEST_JOIN_ABORT_BEFORE_WRITE";

/// What the operator asked for.
#[derive(Debug)]
pub struct JoinPlan {
    pub name: ServerName,
    pub link: JoinLink,
    pub public_addr: Option<HostPort>,
    pub listen: HostPort,
    pub priority: u32,
}

/// Joins the network of `plan.link` and writes the state. Returns the state written.
///
/// The state directory is checked and locked before the token leaves this machine: a
/// directory that cannot be used (unsafe, or another process holds it) fails the join before
/// the seed spends the token. A directory created here is removed again if the join fails.
pub async fn join(state_dir: &StateDir, plan: JoinPlan) -> Result<NetworkState> {
    state_dir.refuse_initialised()?;
    let lock = state_dir.create_and_lock()?;
    let result = match state_dir.refuse_initialised() {
        Ok(()) => join_locked(state_dir, plan).await,
        Err(error) => Err(error),
    };
    if result.is_err() {
        lock.abandon();
    }
    result
}

async fn join_locked(state_dir: &StateDir, plan: JoinPlan) -> Result<NetworkState> {
    let key = state_dir
        .existing_key()?
        .unwrap_or_else(Keypair::generate_ed25519);
    let local_id = key.public().to_peer_id();
    // A server that joined before keeps its PQ4 identity, like its node key.
    let existing_pq4 = state_dir.existing_pq4()?;
    let pq4_written = existing_pq4.is_none();
    let mut pq4 = match existing_pq4 {
        Some(store) => store,
        None => StateDir::generate_pq4()?,
    };
    let card = Pq4Card::new(&key, &pq4)?;
    let seed_addr = plan
        .link
        .seed
        .to_multiaddr()
        .with(Protocol::P2p(plan.link.peer));
    let mut swarm = build_swarm(key.clone(), |_| Ok(join::behaviour(JOIN_DEADLINE)))?;
    swarm
        .dial(seed_addr.clone())
        .context("cannot dial the seed")?;
    let request = JoinRequest {
        network_id: plan.link.network_id.clone(),
        token: plan.link.token.clone(),
        name: plan.name.as_str().to_owned(),
        addr: plan.public_addr.as_ref().map(ToString::to_string),
        listen_port: plan.listen.port,
        priority: plan.priority,
        step: JoinStep::AskThenConfirm,
        card: Some(card),
    };
    let confirmation = JoinRequest {
        step: JoinStep::Confirm,
        ..request.clone()
    };
    let mut pending = Some(request.clone());
    let mut attempts = 1;
    let seed = plan.link.seed.to_string();
    let outcome = tokio::time::timeout(JOIN_DEADLINE, async {
        loop {
            // A connection lost before the seed answered (a seed under a flood of strangers
            // cuts its oldest idle ones, which a slow joiner can be) is dialled again, a few
            // times: if the seed never read the token it is still unused; if it did, the
            // retry is told that a join of this node is in progress.
            let mut lost = None;
            match swarm.select_next_some().await {
                // Noise proved this is the pinned PeerId: only now may the token leave.
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == plan.link.peer => {
                    if let Some(request) = pending.take() {
                        swarm.behaviour_mut().send_request(&peer_id, request);
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => match error {
                    DialError::WrongPeerId { obtained, .. } => return Err(anyhow::anyhow!(
                        "the node at {seed} is {obtained}, not the seed {} named in the link; the token was not sent",
                        plan.link.peer
                    )),
                    other => lost = Some(anyhow::anyhow!("cannot reach the seed at {seed}: {}", dial_error_summary(&other))),
                },
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error: error @ (OutboundFailure::ConnectionClosed | OutboundFailure::Io(_)),
                    ..
                }) => lost = Some(anyhow::anyhow!("the join request to {seed} failed: {error}")),
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return response.map_err(|refusal| anyhow::anyhow!("the seed refused the join: {refusal}")),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                    return Err(match error {
                        OutboundFailure::Timeout => anyhow::anyhow!("the seed at {seed} did not answer in time"),
                        OutboundFailure::UnsupportedProtocols => {
                            anyhow::anyhow!("the node at {seed} does not speak the Join protocol")
                        }
                        other => anyhow::anyhow!("the join request to {seed} failed: {other}"),
                    });
                }
                _ => {}
            }
            if let Some(error) = lost {
                if attempts >= JOIN_ATTEMPTS {
                    return Err(error);
                }
                attempts += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                pending = Some(request.clone());
                swarm.dial(seed_addr.clone()).context("cannot dial the seed")?;
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("the seed at {seed} did not answer within {} s", JOIN_DEADLINE.as_secs())))?;

    if outcome.network_id != plan.link.network_id || outcome.record.node_id != local_id {
        bail!("the seed's answer does not match this join (network or node id differs)");
    }
    let secrets = open_secrets(&mut pq4, local_id, plan.link.peer, &outcome)?;
    let secret = NetworkSecret::from_hex(&secrets.network_secret)
        .context("the seed sent a malformed network secret")?;
    let mut state = NetworkState {
        network_id: outcome.network_id.clone(),
        owner_username: secrets.owner_username.clone(),
        network_secret: Some(StoredSecret::from_secret(&secret)),
        peers: Vec::new(),
        format: STATE_FORMAT,
        node: LocalNode {
            name: plan.name.as_str().to_owned(),
            node_id: local_id,
            public_addr: outcome.record.addr.clone(),
            listen: plan.listen.to_string(),
            priority: plan.priority,
            incarnation: 0,
        },
        departed: Vec::new(),
        invites: Vec::new(),
        left: false,
        bot_token: secrets.bot_token.clone().map(StoredSecret::new),
        settings: secrets.settings.clone(),
        network_tag: Some(secrets.network_tag.clone()),
        secret_epoch: secrets.secret_epoch,
        last_rotation: None,
    };
    let members: Vec<_> = outcome
        .members
        .iter()
        .map(|r| (r.clone(), constella_behaviours::membership::Status::Offline))
        .collect();
    state.set_members(&members);
    if std::env::var_os(ABORT_BEFORE_WRITE).is_some() {
        std::process::abort();
    }
    let key_written = !state_dir.key_path().exists();
    if key_written {
        state_dir.save_key(&key)?;
    }
    if pq4_written {
        state_dir.save_pq4(&pq4)?;
    }
    state_dir.save(&state)?;
    match confirm(&mut swarm, plan.link.peer, seed_addr, confirmation).await {
        Confirmed::Yes => {}
        Confirmed::Undone(refusal) => {
            // The seed no longer counts this node: what was written must go, or it would
            // start as a member nobody knows.
            let _ = std::fs::remove_file(state_dir.state_path());
            if key_written {
                let _ = std::fs::remove_file(state_dir.key_path());
            }
            if pq4_written {
                let _ = std::fs::remove_file(state_dir.pq4_key_path());
            }
            bail!("the seed refused the confirmation: {refusal}");
        }
        Confirmed::Unknown(why) => eprintln!(
            "warning: the seed at {seed} did not take the confirmation ({why}); if `constella peers` on a member does not list {} within 15 s, the seed undid the join: remove {} and join again with the same link",
            plan.name.as_str(),
            state_dir.state_path().display()
        ),
    }
    Ok(state)
}

/// Opens the secrets the seed sealed to this node's PQ4 card, and checks that the seed sealed
/// them: the sender's PQ4 identity must be the one in the seed's own record, whose card the
/// seed's node key signed (and the seed's PeerId is pinned by the link and proved by noise).
fn open_secrets(
    pq4: &mut constella_keys::KeyStore,
    local_id: libp2p::PeerId,
    seed: libp2p::PeerId,
    outcome: &JoinAccepted,
) -> Result<JoinSecrets> {
    if outcome.sealed.is_empty() {
        bail!("the seed sent its secrets without PQ4 sealing; upgrade constella on the seed");
    }
    let (sender, plain) =
        network_keys::open_from(pq4, &local_id, Purpose::JoinSecrets, &outcome.sealed)
            .context("the seed's sealed secrets cannot be opened")?;
    let seed_identity = outcome
        .members
        .iter()
        .find(|r| r.node_id == seed)
        .and_then(|r| r.card.as_ref())
        .filter(|card| card.signed_by(&seed))
        .map(|card| card.identity())
        .transpose()?;
    if seed_identity.as_ref() != Some(&sender) {
        bail!("the sealed secrets were not sealed by the seed's PQ4 identity");
    }
    ciborium::from_reader(plain.as_slice())
        .map_err(|_| anyhow::anyhow!("the seed's sealed secrets are malformed"))
}

/// What became of the confirmation.
enum Confirmed {
    /// The seed took it (or is an older seed that admitted this node at once).
    Yes,
    /// The seed had undone the admission.
    Undone(JoinRefusal),
    /// No answer: the admission may stand or be undone.
    Unknown(String),
}

/// Tells the seed that the state is written, on the join's connection (re-dialled if it
/// closed), and waits for its answer.
async fn confirm(
    swarm: &mut libp2p::Swarm<join::Behaviour>,
    seed: libp2p::PeerId,
    seed_addr: libp2p::Multiaddr,
    confirmation: JoinRequest,
) -> Confirmed {
    swarm
        .behaviour_mut()
        .send_request_with_addresses(&seed, confirmation, vec![seed_addr]);
    let answer = tokio::time::timeout(CONFIRM_DEADLINE, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return response,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => return Err(JoinRefusal::SeedFailure(error.to_string())),
                _ => {}
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(JoinAccepted { .. })) => Confirmed::Yes,
        // An older seed: it does not know confirmations and admitted this node at once.
        Ok(Err(JoinRefusal::TokenUsed)) => Confirmed::Yes,
        Ok(Err(refusal @ JoinRefusal::AdmissionUndone)) => Confirmed::Undone(refusal),
        Ok(Err(other)) => Confirmed::Unknown(other.to_string()),
        Err(_) => Confirmed::Unknown(format!("no answer within {} s", CONFIRM_DEADLINE.as_secs())),
    }
}

/// The most useful line of a dial error (libp2p nests the per-address errors).
fn dial_error_summary(error: &DialError) -> String {
    match error {
        DialError::Transport(errors) => errors
            .iter()
            .map(|(_, e)| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(inner) = source {
                    text = inner.to_string();
                    source = inner.source();
                }
                text
            })
            .next()
            .unwrap_or_else(|| "no address to dial".to_owned()),
        other => other.to_string(),
    }
}
