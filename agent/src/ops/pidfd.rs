//! A process held by a pidfd, so that `kedge reload` signals the process it checked and not one
//! that took its pid since.
//!
//! Checking /proc and then calling `kill(pid)` leaves a gap: the agent may end between the two
//! and its pid go to another process, which SIGHUP (by default) terminates. A pidfd names one
//! process for as long as it is open: a signal sent through it after that process was reaped
//! fails with ESRCH, whatever has the pid by then (an ended process not yet reaped, a zombie,
//! takes the signal to no effect). The pidfd is opened before /proc is read, so what
//! the check saw is the process the pidfd holds, or the pidfd's process has already ended.
//!
//! Linux gained pidfds in 5.3 (5.1 for signals). Older kernels, and seccomp profiles that refuse
//! the calls (Docker's before 20.10 answer EPERM), fall back to `kill` with the gap: a refused
//! `pidfd_open` gives [`Pidfd::open`]'s `Ok(None)`, a refused `pidfd_send_signal`
//! [`send`]'s retry with `kill`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One process, held open.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
}

impl Pidfd {
    /// Holds the process that has `pid` now. `Ok(None)` where this kernel has no pidfds (or
    /// may not use them); ESRCH where no process has that pid.
    pub fn open(pid: u32) -> io::Result<Option<Pidfd>> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM) => Ok(None),
                _ => Err(e),
            };
        }
        let fd = i32::try_from(fd)
            .map_err(|_| io::Error::other("pidfd_open: descriptor out of range"))?;
        // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
        Ok(Some(Pidfd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// Sends `signal` to the held process; ESRCH once it has been reaped, even if its pid is
    /// taken.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: the descriptor is ours and open; no siginfo is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether the held process has ended (a pidfd polls readable from its exit on).
    pub fn ended(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, a zero timeout.
        let n = unsafe { libc::poll(&mut poll, 1, 0) };
        n > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// Sends `signal` to `pid` through `held` when there is one, else, or when the kernel refuses
/// `pidfd_send_signal` (ENOSYS, or EPERM from a seccomp profile that allows `pidfd_open` but not
/// it), with `kill`. A real EPERM (another user's process) comes back from `kill` as well.
/// Before that `kill`, a held process seen to have ended is reported as ESRCH: the gap left is
/// between that look and the `kill`.
pub fn send(held: Option<&Pidfd>, pid: u32, signal: libc::c_int) -> io::Result<()> {
    if let Some(held) = held {
        match held.signal(signal) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                if held.ended() {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            sent => return sent,
        }
    }
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill only sends a signal.
    match unsafe { libc::kill(pid, signal) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    /// A child that sleeps, and the pidfd holding it.
    fn held_sleeper() -> (std::process::Child, Pidfd) {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let held = Pidfd::open(child.id())
            .expect("pidfd_open")
            .expect("this kernel has pidfds");
        (child, held)
    }

    #[test]
    fn a_held_process_is_signalled_and_its_end_seen() {
        let (mut child, held) = held_sleeper();
        assert!(!held.ended());
        held.signal(libc::SIGTERM).expect("signal");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(held.ended());
    }

    #[test]
    fn a_held_process_that_ended_is_never_signalled_again() {
        let (mut child, held) = held_sleeper();
        child.kill().expect("kill");
        child.wait().expect("wait");
        // Reaped: its pid is free for any process to take; the signal must not reach one.
        assert!(held.ended());
        let e = held
            .signal(libc::SIGHUP)
            .expect_err("the process has ended");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
