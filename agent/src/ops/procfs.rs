//! Which process a process id names, from /proc: what `kedge reload` checks before it signals
//! the pid an agent reported over HTTP.
//!
//! A pid alone does not name a process. An agent in a container reports the pid its own pid
//! namespace gave it, which outside means another process, perhaps another kedge; and a pid is
//! reused once its process has ended. The agent therefore also reports its pid namespace and
//! when it started, and `kedge reload` signals only a process of its own namespace that started
//! at that time. An agent in a time namespace of its own reads its start shifted (/proc gives
//! it relative to the reader's boot time) and is refused: reload it from inside.

/// What /proc tells of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The target of `/proc/PID/ns/pid`, e.g. `pid:[4026531836]`, when readable.
    pub namespace: Option<String>,
    /// When it started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_ticks: Option<u64>,
    /// Its name (`/proc/PID/comm`).
    pub name: String,
}

impl Identity {
    /// This process, as it reports itself.
    pub fn own() -> Identity {
        Identity::read("self")
    }

    /// Process `pid` as seen from here (an empty name when there is none).
    pub fn of(pid: u32) -> Identity {
        Identity::read(&pid.to_string())
    }

    fn read(proc: &str) -> Identity {
        Identity {
            namespace: std::fs::read_link(format!("/proc/{proc}/ns/pid"))
                .ok()
                .map(|p| p.display().to_string()),
            start_ticks: std::fs::read_to_string(format!("/proc/{proc}/stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, 22)?.parse().ok()),
            name: std::fs::read_to_string(format!("/proc/{proc}/comm"))
                .map(|comm| comm.trim_end().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Field `n` (1-based, as proc(5) numbers them) of a `/proc/PID/stat` line. The second field,
/// the name in parentheses, may hold spaces and parentheses itself, so fields from the third
/// on are counted after the last `)`.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// Whether the /proc this process sees is of its own pid namespace: it is not after entering a
/// namespace without its mount namespace (`nsenter -p` without `-m`), and then a pid looked up
/// there names another process than the one `kill` would reach.
pub fn proc_is_own() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Whether process `pid` exists and has not exited (a zombie has, though not yet reaped).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !matches!(stat_field(&stat, 3), Some("Z" | "X") | None)
}

/// Why the process found at a pid is not the agent that reported that pid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTheAgent {
    /// The agent runs in another pid namespace (a container): its pid means something else here.
    #[error(
        "the agent runs in another pid namespace ({agent}, this command in {here}), as in a container: its process id means another process here. Send it SIGHUP from inside its namespace (e.g. `docker kill --signal HUP CONTAINER`, or `kedge reload` run there)"
    )]
    Namespace {
        /// The agent's namespace.
        agent: String,
        /// This command's.
        here: String,
    },
    /// No kedge process has that pid here.
    #[error("no kedge process has that id here")]
    NotKedge,
    /// A kedge has that pid, but it started at another time: another agent, or the pid reused.
    #[error(
        "the kedge process with that id here started at another time (tick {found}, the agent says {agent}): it is another agent, or the id was reused"
    )]
    Started {
        /// The agent's start, as it reported it.
        agent: u64,
        /// The start of the process found.
        found: u64,
    },
}

/// Whether the agent's pid means anything here: it does only in this process's own pid
/// namespace (an unreadable namespace is not held against it). Asked before the pid is looked
/// up, so that an agent in a container is named as such whatever its pid names here.
pub fn same_namespace(agent: &Identity, here: &Identity) -> Result<(), NotTheAgent> {
    match (&agent.namespace, &here.namespace) {
        (Some(a), Some(h)) if a != h => Err(NotTheAgent::Namespace {
            agent: a.clone(),
            here: h.clone(),
        }),
        _ => Ok(()),
    }
}

/// Whether the process found at the reported pid (`found`) is the agent that reported
/// `agent`, as far as /proc can tell from here (`here`: this process). What cannot be read on
/// either side is not held against it; the name always is.
pub fn same_process(
    agent: &Identity,
    here: &Identity,
    found: &Identity,
) -> Result<(), NotTheAgent> {
    same_namespace(agent, here)?;
    if found.name != "kedge" {
        return Err(NotTheAgent::NotKedge);
    }
    match (agent.start_ticks, found.start_ticks) {
        (Some(a), Some(f)) if a != f => Err(NotTheAgent::Started { agent: a, found: f }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(namespace: Option<&str>, start_ticks: Option<u64>, name: &str) -> Identity {
        Identity {
            namespace: namespace.map(str::to_owned),
            start_ticks,
            name: name.to_owned(),
        }
    }

    #[test]
    fn only_a_kedge_of_this_namespace_that_started_when_the_agent_did_is_signalled() {
        let ns = Some("pid:[4026531836]");
        let other = Some("pid:[4026532301]");
        let agent = id(ns, Some(1234), "kedge");
        let here = id(ns, Some(9999), "kedge");
        assert_eq!(same_process(&agent, &here, &agent), Ok(()));
        // A container's agent: refused whatever runs under its pid here.
        let boxed = id(other, Some(1234), "kedge");
        assert!(matches!(
            same_process(&boxed, &here, &agent),
            Err(NotTheAgent::Namespace { .. })
        ));
        // Another program at the pid.
        assert_eq!(
            same_process(&agent, &here, &id(ns, Some(1234), "systemd")),
            Err(NotTheAgent::NotKedge)
        );
        // No process at the pid.
        assert_eq!(
            same_process(&agent, &here, &id(None, None, "")),
            Err(NotTheAgent::NotKedge)
        );
        // Another kedge, or the pid reused by one.
        assert_eq!(
            same_process(&agent, &here, &id(ns, Some(1300), "kedge")),
            Err(NotTheAgent::Started {
                agent: 1234,
                found: 1300
            })
        );
        // What cannot be read is not held against it.
        assert_eq!(
            same_process(&id(None, None, "kedge"), &here, &id(ns, Some(1), "kedge")),
            Ok(())
        );
        assert_eq!(
            same_process(&agent, &id(None, None, "kedge"), &id(None, None, "kedge")),
            Ok(())
        );
    }

    #[test]
    fn stat_fields_are_counted_after_the_name_whatever_it_holds() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(stat_field(stat, 22), Some("987654"));
        assert_eq!(stat_field(stat, 2), None);
        assert_eq!(stat_field("no name", 3), None);
    }

    #[test]
    fn this_process_reads_the_same_from_self_and_from_its_pid() {
        let own = Identity::own();
        assert!(
            own.namespace
                .as_deref()
                .is_some_and(|n| n.starts_with("pid:["))
        );
        assert!(own.start_ticks.is_some());
        assert_eq!(Identity::of(std::process::id()), own);
        assert!(proc_is_own());
    }

    #[test]
    fn a_process_is_alive_until_it_has_exited() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        // Exited but not reaped: a zombie.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid));
        child.wait().expect("reap");
        assert!(!alive(pid));
    }
}
