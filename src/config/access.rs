//! Who besides popspool can read a file that holds a secret (a
//! configuration with an inline password, a `password_file`, a
//! `tls_client_key`) through the file's group: popspool.ini(5), SECRETS.
//!
//! The mode rule in `build` lets a secret file be readable by the group
//! popspool runs as. That group is also the spool's, and spool consumers
//! join it (README "The spool"), so such a file is readable by them too
//! unless no directory on its path lets them in. This module names those
//! users, for a loud warning at every load (start, SIGHUP, `--check`).
//!
//! Members are read from /etc/group (listed members) and /etc/passwd
//! (users whose primary group it is): the local databases that
//! sysusers.d, `useradd` and `usermod -aG` write. Members that only a
//! directory service (LDAP, SSSD) knows are not seen; the README says so.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The local user and group databases.
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// A user: name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub name: String,
    pub uid: u32,
}

/// The group's name and the users other than `me` (the uid popspool runs
/// as) and the file's owner who can read `file` (whose metadata is `meta`;
/// for a directory: enter it) through its group; `None` when nobody can
/// (no group bit, nobody else in the group, or a directory on the way
/// shuts them out).
pub(super) fn group_readers(
    file: &Path,
    meta: &Metadata,
    me: u32,
) -> Option<(String, Vec<String>)> {
    let bit = if meta.is_dir() { 0o010 } else { 0o040 };
    if meta.mode() & bit == 0 {
        return None;
    }
    let passwd = std::fs::read_to_string(PASSWD).unwrap_or_default();
    let group = std::fs::read_to_string(GROUP).unwrap_or_default();
    let gid = meta.gid();
    let others: Vec<User> = members(&group, &passwd, gid)
        .into_iter()
        .filter(|u| u.uid != me && u.uid != meta.uid())
        .collect();
    if others.is_empty() {
        return None;
    }
    let dirs = ancestors(file);
    if dirs
        .iter()
        .any(|&(mode, uid, dgid)| shuts_out(mode, uid, dgid, gid, &others))
    {
        return None;
    }
    let name = group_name(&group, gid).unwrap_or_else(|| gid.to_string());
    Some((name, others.into_iter().map(|u| u.name).collect()))
}

/// The members of group `gid`: those `group` lists for it and those whose
/// primary group it is in `passwd`, each once, in that order.
pub(super) fn members(group: &str, passwd: &str, gid: u32) -> Vec<User> {
    let users: Vec<(User, u32)> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let uid = f.get(2)?.parse().ok()?;
            let primary = f.get(3)?.parse().ok()?;
            Some((
                User {
                    name: f[0].to_owned(),
                    uid,
                },
                primary,
            ))
        })
        .collect();
    let listed = group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == gid).then(|| f.get(3).copied().unwrap_or(""))
        })
        .flat_map(|list| list.split(',').filter(|n| !n.is_empty()));
    let mut out: Vec<User> = Vec::new();
    for name in listed {
        // A listed name without a passwd entry still names someone (a
        // directory-service user): keep it, with a uid nobody has.
        let user = users
            .iter()
            .find(|(u, _)| u.name == name)
            .map(|(u, _)| u.clone())
            .unwrap_or(User {
                name: name.to_owned(),
                uid: u32::MAX,
            });
        if !out.contains(&user) {
            out.push(user);
        }
    }
    for (user, primary) in users {
        if primary == gid && !out.iter().any(|u| u.name == user.name) {
            out.push(user);
        }
    }
    out
}

fn group_name(group: &str, gid: u32) -> Option<String> {
    group.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == gid).then(|| f[0].to_owned())
    })
}

/// Mode, owner and group of each directory above `file` (resolved).
fn ancestors(file: &Path) -> Vec<(u32, u32, u32)> {
    let Ok(real) = file.canonicalize() else {
        return Vec::new();
    };
    real.ancestors()
        .skip(1)
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| (m.mode(), m.uid(), m.gid()))
        .collect()
}

/// Whether a directory (`mode`, owner `uid`, group `dgid`) keeps every one
/// of `others` (members of group `gid`, the file's) from passing: no search
/// bit for others; none for its group, unless that group is root's (gid 0,
/// which spool consumers are not in) and not the file's; and no member
/// owns it. Membership in a third group is not looked up: its search bit
/// counts as letting them pass, so the warning errs on the loud side.
fn shuts_out(mode: u32, uid: u32, dgid: u32, gid: u32, others: &[User]) -> bool {
    let others_pass = mode & 0o001 != 0;
    let group_pass = mode & 0o010 != 0 && (dgid == gid || dgid != 0);
    let owner_pass = others.iter().any(|u| u.uid == uid) && mode & 0o100 != 0;
    !(others_pass || group_pass || owner_pass)
}

/// The effective uid, from /proc/self/status.
pub(super) fn effective_uid() -> Option<u32> {
    effective_id("Uid:")
}

/// The effective gid, from /proc/self/status.
pub(super) fn effective_gid() -> Option<u32> {
    effective_id("Gid:")
}

/// The second field (effective) of the `Uid:` or `Gid:` line of
/// /proc/self/status. std has no geteuid or getegid, and reading /proc keeps
/// this module free of unsafe code (libc's would need an `unsafe` block).
fn effective_id(line: &str) -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|l| l.strip_prefix(line))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        popspool:x:990:990:popspool:/var/lib/popspool:/usr/sbin/nologin\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n\
        bob:x:1001:990::/home/bob:/bin/sh\n\
        broken line\n";
    const GROUP_TEXT: &str = "root:x:0:\npopspool:x:990:alice,ldapuser\nalice:x:1000:\n\
        empty:x:991:\n";

    fn names(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.name.as_str()).collect()
    }

    #[test]
    fn members_are_listed_and_primary() {
        let m = members(GROUP_TEXT, PASSWD_TEXT, 990);
        assert_eq!(names(&m), ["alice", "ldapuser", "popspool", "bob"]);
        assert_eq!(m[0].uid, 1000);
        assert_eq!(m[1].uid, u32::MAX);
        assert!(members(GROUP_TEXT, PASSWD_TEXT, 991).is_empty());
        assert_eq!(names(&members(GROUP_TEXT, PASSWD_TEXT, 0)), ["root"]);
        assert_eq!(group_name(GROUP_TEXT, 990).as_deref(), Some("popspool"));
        assert_eq!(group_name(GROUP_TEXT, 5), None);
    }

    #[test]
    fn directories_that_shut_the_group_out() {
        let alice = [User {
            name: "alice".into(),
            uid: 1000,
        }];
        // /etc/popspool as popspool:root 0700: nobody else passes.
        assert!(shuts_out(0o40700, 990, 0, 990, &alice));
        // root:popspool 0750: the group passes.
        assert!(!shuts_out(0o40750, 0, 990, 990, &alice));
        // 0755: everyone passes.
        assert!(!shuts_out(0o40755, 0, 0, 990, &alice));
        // root:root 0750: only root's group, which consumers are not in.
        assert!(shuts_out(0o40750, 0, 0, 990, &alice));
        // A member owns it.
        assert!(!shuts_out(0o40700, 1000, 0, 990, &alice));
    }
}
