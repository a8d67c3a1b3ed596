//! Directories that hold the node's secrets or logs (the state directory, `run --log-dir`).
//!
//! A directory this node creates is made 0700. One that already exists is never chmodded:
//! it may be shared (`--log-dir /var/log`) and a symlink may point anywhere, so changing its
//! mode could open or close someone else's directory. Instead it is checked, through any
//! symlink, and refused with one line if it is not a directory, is owned by another user, or
//! is writable by group or others (anyone who can write to it can replace our files).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The effective uid of this process, from /proc (`libc::geteuid` would need `unsafe`, which
/// the workspace denies). `None` if /proc is not mounted.
pub fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether a directory was made now or was already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// Created now, mode 0700: it may be removed again if what it was made for fails.
    Created,
    /// It existed and passed the checks; its mode was left as it was.
    Existing,
}

/// Makes `dir` (0700) if it does not exist, or checks an existing one without changing it.
/// `what` names it in errors ("state directory", "log directory").
pub fn prepare(dir: &Path, what: &str) -> Result<Prepared> {
    match fs::symlink_metadata(dir) {
        Ok(_) => check_existing(dir, what).map(|()| Prepared::Existing),
        Err(e) if e.kind() == ErrorKind::NotFound => create(dir, what),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {what} {}", dir.display())),
    }
}

fn create(dir: &Path, what: &str) -> Result<Prepared> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {what} {}", dir.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Made by someone else in between: judge it like any existing directory.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return check_existing(dir, what).map(|()| Prepared::Existing);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {what} {}", dir.display()));
        }
    }
    // The umask may have taken bits away; set exactly 0700 through a handle that refuses a
    // symlink, so a directory swapped in meanwhile is not the one changed.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .with_context(|| format!("cannot open the new {what} {}", dir.display()))?;
    handle
        .set_permissions(fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
    Ok(Prepared::Created)
}

fn check_existing(dir: &Path, what: &str) -> Result<()> {
    let meta =
        fs::metadata(dir).with_context(|| format!("cannot inspect {what} {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{what} {} exists and is not a directory", dir.display());
    }
    if let Some(uid) = effective_uid()
        && meta.uid() != uid
    {
        bail!(
            "{what} {} is owned by uid {}, not by this user (uid {uid}); refusing to use it (choose a directory of your own)",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "{what} {} is writable by group or others (mode {mode:04o}); refusing to use it (run chmod go-w on it, or choose another)",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_0700_and_an_existing_one_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b/state");
        assert_eq!(prepare(&new, "state directory").unwrap(), Prepared::Created);
        assert_eq!(mode(&new), 0o700);

        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            prepare(&shared, "log directory").unwrap(),
            Prepared::Existing
        );
        assert_eq!(
            mode(&shared),
            0o755,
            "an existing directory is not chmodded"
        );

        // Through a symlink: judged by its target, which keeps its mode.
        let link = tmp.path().join("link");
        symlink(&shared, &link).unwrap();
        assert_eq!(prepare(&link, "log directory").unwrap(), Prepared::Existing);
        assert_eq!(mode(&shared), 0o755);
    }

    #[test]
    fn unsafe_directories_are_refused_with_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let error = format!("{:#}", prepare(&open, "log directory").unwrap_err());
        assert!(error.contains("writable by group or others"), "{error}");
        assert!(error.contains("0777"), "{error}");
        assert!(!error.contains('\n'));
        assert_eq!(mode(&open), 0o777, "a refused directory is left alone");

        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let error = format!("{:#}", prepare(&file, "state directory").unwrap_err());
        assert!(error.contains("not a directory"), "{error}");

        // Owned by someone else: as root, a directory given away; otherwise one of root's.
        let foreign = tmp.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
        let foreign = if effective_uid() == Some(0) {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            foreign
        } else {
            Path::new("/").to_owned()
        };
        let error = format!("{:#}", prepare(&foreign, "state directory").unwrap_err());
        assert!(error.contains("owned by uid"), "{error}");
    }
}
