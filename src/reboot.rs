//! Rebooting the host on a `Reboot` request: the privilege check, and the action itself (the
//! operator's command, `systemctl reboot`, or the `reboot(2)` system call).

use std::path::Path;

/// What a node does when it accepts a `Reboot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootAction {
    /// Reboot the host: `sync`, then `systemctl reboot` where systemd runs, else `reboot(2)`.
    Host,
    /// Run this command with `sh -c` instead (`--reboot-command`, `CONSTELLA_REBOOT_COMMAND`).
    Command(String),
}

/// The capability bit of CAP_SYS_BOOT (linux/capability.h).
const CAP_SYS_BOOT: u32 = 22;

impl RebootAction {
    /// How the action is named in logs and in the caller's answer.
    pub fn describe(&self) -> String {
        match self {
            RebootAction::Host if systemd_runs() => "systemctl reboot".to_owned(),
            RebootAction::Host => "reboot(2)".to_owned(),
            RebootAction::Command(command) => format!("reboot command `{command}`"),
        }
    }

    /// Whether this process may take the action. An operator's command is the operator's
    /// business; a host reboot needs CAP_SYS_BOOT in the effective set (root has it).
    pub fn permitted(&self) -> bool {
        match self {
            RebootAction::Host => has_effective_capability(CAP_SYS_BOOT),
            RebootAction::Command(_) => true,
        }
    }

    /// Takes the action. For [`RebootAction::Host`] this only returns if the reboot failed.
    pub async fn perform(&self, requested_by: &str) {
        match self {
            RebootAction::Command(command) => {
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .env("CONSTELLA_REBOOT_REQUESTED_BY", requested_by)
                    .stdin(std::process::Stdio::null())
                    .status()
                    .await;
                match status {
                    Ok(status) if status.success() => {
                        tracing::info!(command, "reboot command finished");
                    }
                    Ok(status) => tracing::error!(command, %status, "reboot command failed"),
                    Err(error) => tracing::error!(command, %error, "cannot run the reboot command"),
                }
            }
            RebootAction::Host => {
                if systemd_runs() {
                    let _ = tokio::process::Command::new("sync").status().await;
                    match tokio::process::Command::new("systemctl")
                        .arg("reboot")
                        .status()
                        .await
                    {
                        // systemd now stops every service, this daemon included.
                        Ok(status) if status.success() => return,
                        Ok(status) => {
                            tracing::error!(%status, "systemctl reboot failed; trying reboot(2)")
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot run systemctl; trying reboot(2)")
                        }
                    }
                }
                let error = sync_and_reboot();
                tracing::error!(%error, "reboot(2) failed");
            }
        }
    }
}

/// Whether systemd is the init system (the test `sd_booted(3)` uses).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether `cap` is in this process's effective capability set, from /proc/self/status.
fn has_effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_capabilities(&status))
        .is_some_and(|set| set & (1u64 << cap) != 0)
}

/// The `CapEff` mask of a /proc/PID/status text.
fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Flushes filesystems and reboots at once. Returns only on failure, with the reason.
#[allow(unsafe_code)]
fn sync_and_reboot() -> std::io::Error {
    // SAFETY: sync(2) takes no arguments and cannot fail; reboot(2) with RB_AUTOBOOT takes no
    // pointers. Neither touches memory this process owns. Callers checked CAP_SYS_BOOT.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tconstella\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let set = effective_capabilities(status).unwrap();
        assert_ne!(set & (1 << CAP_SYS_BOOT), 0);
        let dropped = "CapEff:\t000001fffebfffff\n";
        assert_eq!(
            effective_capabilities(dropped).unwrap() & (1 << CAP_SYS_BOOT),
            0
        );
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn a_command_is_always_permitted() {
        assert!(RebootAction::Command("true".into()).permitted());
    }
}
