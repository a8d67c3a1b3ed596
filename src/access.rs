//! Who may do what through the bot: the owner, the accounts the owner granted a role
//! (`constella access grant @user viewer|operator`), and nobody else.
//!
//! Everything here is decided from the network settings, which every node holds, so any
//! leader decides the same way. An account is recognised by its numeric Telegram id once that
//! is pinned (at its first contact after the grant, like the owner's); until then by its
//! username. A username taken over after the pin gets nothing.

use constella_behaviours::rpc::{DockerRequest, Requester};
use constella_behaviours::settings::{NetworkSettings, Role, username_key};

/// What someone asks the bot for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The node list and a node's card.
    List,
    /// A node's CPU, memory, disks and uptime.
    Usage,
    /// Rebooting a node (asking for it and confirming it).
    Reboot,
    /// A join link.
    Invite,
    /// The bot's language, a network setting.
    Language,
    /// The last entries of the audit log (the owner's alone).
    Audit,
    /// A one-time PQ4 chat account invite (`/chat_invite`).
    ChatInvite,
    /// Removing a node from the network, which rotates the network secret (the owner's alone;
    /// the bot and the web panel offer it).
    Remove,
    /// Setting an alert threshold, a network setting (the owner's alone).
    Alerts,
}

impl Action {
    /// The action's name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Usage => "usage",
            Action::Reboot => "reboot",
            Action::Invite => "invite",
            Action::Language => "language",
            Action::Audit => "audit",
            Action::ChatInvite => "chat_invite",
            Action::Remove => "remove",
            Action::Alerts => "alerts",
        }
    }
}

/// How much someone may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// Everything.
    Owner,
    /// What the role allows.
    Granted(Role),
}

impl Rank {
    /// Whether this rank may do `action`: a viewer sees (list, cards, usage); an operator also
    /// reboots and invites (join links and chat account invites alike: both let someone new
    /// use the servers, and a chat account is the lesser); the owner alone changes the language
    /// and the alert thresholds, reads the audit log and removes nodes. Changing the owner, the
    /// token or the roles is not offered by the bot at all: those are CLI commands on a member
    /// (root on a server of the network).
    pub fn allows(self, action: Action) -> bool {
        match (self, action) {
            (Rank::Owner, _) => true,
            (Rank::Granted(_), Action::List | Action::Usage) => true,
            (
                Rank::Granted(Role::Operator),
                Action::Reboot | Action::Invite | Action::ChatInvite,
            ) => true,
            (Rank::Granted(_), _) => false,
        }
    }

    /// The rank's name in the audit log and in `constella access`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rank::Owner => "owner",
            Rank::Granted(role) => role.as_str(),
        }
    }
}

/// Who a Telegram user is to this network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Known by id.
    Known(Rank),
    /// The owner's username and no owner id is pinned yet: pin this id.
    PinOwner(u64),
    /// A granted username whose id is not pinned yet: pin this id to the grant `key`.
    PinGranted { key: String, role: Role, id: u64 },
    /// Anyone else (bots included).
    Refused,
}

/// A Telegram user as the bot sees them.
#[derive(Debug, Clone, Copy)]
pub struct TelegramUser<'a> {
    pub id: u64,
    pub username: Option<&'a str>,
    pub is_bot: bool,
}

/// Decides who `user` is, given the settings and the owner named at `init`.
pub fn access(user: TelegramUser<'_>, settings: &NetworkSettings, initial_owner: &str) -> Access {
    if user.is_bot {
        return Access::Refused;
    }
    let same_name = |wanted: &str| {
        let wanted = username_key(wanted);
        user.username
            .is_some_and(|name| !wanted.is_empty() && username_key(name) == wanted)
    };
    match settings.owner_user_id {
        Some(owner) if owner == user.id => return Access::Known(Rank::Owner),
        None if same_name(settings.owner(initial_owner)) => return Access::PinOwner(user.id),
        _ => {}
    }
    if let Some(role) = settings.role_of_id(user.id) {
        return Access::Known(Rank::Granted(role));
    }
    let unpinned = user.username.and_then(|name| {
        let key = username_key(name);
        let grant = settings.roles.get(&key)?;
        match (grant.role, grant.user_id) {
            (Some(role), None) => Some((key, role)),
            _ => None,
        }
    });
    match unpinned {
        Some((key, role)) => Access::PinGranted {
            key,
            role,
            id: user.id,
        },
        None => Access::Refused,
    }
}

/// What a container request needs of the requester's role: seeing containers is like seeing
/// usage; acting on one is an operator's, like a reboot.
pub fn docker_action(request: &DockerRequest) -> Action {
    match request {
        DockerRequest::Act { .. } => Action::Reboot,
        DockerRequest::Probe
        | DockerRequest::List
        | DockerRequest::Inspect { .. }
        | DockerRequest::Logs { .. } => Action::Usage,
    }
}

/// The action a services request asks for: seeing the units is usage; changing the list or
/// restarting one is as much as a reboot.
pub fn services_action(request: &constella_behaviours::rpc::ServicesRequest) -> Action {
    use constella_behaviours::rpc::ServicesRequest;
    match request {
        ServicesRequest::List => Action::Usage,
        ServicesRequest::Add { .. }
        | ServicesRequest::Remove { .. }
        | ServicesRequest::Restart { .. } => Action::Reboot,
    }
}

/// The check a node makes before it acts for someone another member sent: the CLI of a member
/// (root on a server of the network) may do everything; a Telegram account what its role, in
/// this node's own copy of the settings, allows. A username not pinned yet counts as what it
/// was granted, as the bot that sent the request decided (the pin may still be on its way).
/// The error is one line for the requester and the log.
pub fn check(
    by: &Requester,
    action: Action,
    settings: &NetworkSettings,
    initial_owner: &str,
) -> Result<(), String> {
    let Requester::Telegram { user_id, username } = by else {
        return Ok(());
    };
    let user = TelegramUser {
        id: *user_id,
        username: username.as_deref(),
        is_bot: false,
    };
    let rank = match access(user, settings, initial_owner) {
        Access::Known(rank) => Some(rank),
        Access::PinOwner(_) => Some(Rank::Owner),
        Access::PinGranted { role, .. } => Some(Rank::Granted(role)),
        Access::Refused => None,
    };
    match rank {
        Some(rank) if rank.allows(action) => Ok(()),
        Some(rank) => Err(format!(
            "{} is {} here, which does not allow {}",
            by.describe(),
            rank.as_str(),
            action.as_str()
        )),
        None => Err(format!("{} has no role here", by.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, username: Option<&str>) -> TelegramUser<'_> {
        TelegramUser {
            id,
            username,
            is_bot: false,
        }
    }

    #[test]
    fn owner_is_pinned_by_username_then_by_id() {
        let unpinned = NetworkSettings::default();
        for owner in ["@Owner_Test", "owner_test", "@OWNER_TEST"] {
            assert_eq!(
                access(user(7, Some("owner_test")), &unpinned, owner),
                Access::PinOwner(7)
            );
        }
        assert_eq!(
            access(user(8, Some("someone")), &unpinned, "@owner_test"),
            Access::Refused
        );
        assert_eq!(
            access(user(8, None), &unpinned, "@owner_test"),
            Access::Refused
        );
        let pinned = NetworkSettings {
            owner_user_id: Some(7),
            ..NetworkSettings::default()
        };
        assert_eq!(
            access(user(7, Some("renamed")), &pinned, "@owner_test"),
            Access::Known(Rank::Owner)
        );
        // The username taken over by someone else gets nothing.
        assert_eq!(
            access(user(9, Some("owner_test")), &pinned, "@owner_test"),
            Access::Refused
        );
        let mut bot = user(7, Some("owner_test"));
        bot.is_bot = true;
        assert_eq!(access(bot, &pinned, "@owner_test"), Access::Refused);
    }

    #[test]
    fn a_new_owner_replaces_the_old_one() {
        let pinned = NetworkSettings {
            owner_user_id: Some(7),
            ..NetworkSettings::default()
        };
        let changed = pinned.with_owner("@new_owner");
        assert_eq!(
            access(user(7, Some("owner_test")), &changed, "@owner_test"),
            Access::Refused,
            "the old owner is ignored"
        );
        assert_eq!(
            access(user(11, Some("New_Owner")), &changed, "@owner_test"),
            Access::PinOwner(11)
        );
    }

    #[test]
    fn granted_accounts_are_pinned_and_limited_to_their_role() {
        let settings = NetworkSettings::default().with_role("@carol_v", Some(Role::Viewer));
        let pin = access(user(21, Some("Carol_V")), &settings, "@owner_test");
        assert_eq!(
            pin,
            Access::PinGranted {
                key: "carol_v".into(),
                role: Role::Viewer,
                id: 21
            }
        );
        let mut pinned = settings.clone();
        pinned.roles.get_mut("carol_v").unwrap().user_id = Some(21);
        assert_eq!(
            access(user(21, Some("renamed")), &pinned, "@owner_test"),
            Access::Known(Rank::Granted(Role::Viewer))
        );
        assert_eq!(
            access(user(22, Some("carol_v")), &pinned, "@owner_test"),
            Access::Refused,
            "a username taken over after the pin gets nothing"
        );
        let revoked = pinned.with_role("carol_v", None);
        assert_eq!(
            access(user(21, Some("carol_v")), &revoked, "@owner_test"),
            Access::Refused
        );

        let viewer = Rank::Granted(Role::Viewer);
        let operator = Rank::Granted(Role::Operator);
        assert!(viewer.allows(Action::List) && viewer.allows(Action::Usage));
        assert!(!viewer.allows(Action::Reboot) && !viewer.allows(Action::Invite));
        assert!(operator.allows(Action::Reboot) && operator.allows(Action::Invite));
        assert!(operator.allows(Action::ChatInvite) && Rank::Owner.allows(Action::ChatInvite));
        assert!(!viewer.allows(Action::ChatInvite));
        assert!(!operator.allows(Action::Language));
        assert!(Rank::Owner.allows(Action::Language) && Rank::Owner.allows(Action::Reboot));
        // Removing a node (and rotating the secret) is the owner's alone.
        assert!(Rank::Owner.allows(Action::Remove));
        assert!(!operator.allows(Action::Remove) && !viewer.allows(Action::Remove));
    }

    #[test]
    fn the_executing_node_checks_the_requester_with_its_own_settings() {
        let cli = Requester::Cli {
            user: "root".into(),
        };
        let telegram = |id: u64, name: &str| Requester::Telegram {
            user_id: id,
            username: Some(name.into()),
        };
        let empty = NetworkSettings::default();
        assert!(check(&cli, Action::Reboot, &empty, "@owner_test").is_ok());
        // The owner not pinned yet here: the username decides, as it did on the leader.
        assert!(
            check(
                &telegram(7, "owner_test"),
                Action::Reboot,
                &empty,
                "@owner_test"
            )
            .is_ok()
        );
        let settings = NetworkSettings {
            owner_user_id: Some(7),
            ..NetworkSettings::default()
        }
        .with_role("@carol_v", Some(Role::Viewer));
        assert!(check(&telegram(7, "x"), Action::Reboot, &settings, "@owner_test").is_ok());
        let refused = check(
            &telegram(21, "carol_v"),
            Action::Reboot,
            &settings,
            "@owner_test",
        );
        assert_eq!(
            refused.unwrap_err(),
            "telegram:21 (@carol_v) is viewer here, which does not allow reboot"
        );
        assert!(
            check(
                &telegram(21, "carol_v"),
                Action::Usage,
                &settings,
                "@owner_test"
            )
            .is_ok()
        );
        let revoked = settings.with_role("carol_v", None);
        assert_eq!(
            check(
                &telegram(21, "carol_v"),
                Action::Usage,
                &revoked,
                "@owner_test"
            )
            .unwrap_err(),
            "telegram:21 (@carol_v) has no role here"
        );
        let act = DockerRequest::Act {
            name: "web".into(),
            action: constella_behaviours::rpc::ContainerAction::Restart,
        };
        assert_eq!(docker_action(&act), Action::Reboot);
        assert_eq!(docker_action(&DockerRequest::List), Action::Usage);
    }
}
