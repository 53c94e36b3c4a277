//! The daemon's signals: SIGINT, SIGTERM and SIGHUP blocked in every thread, taken by one
//! that waits for them (so the socket is removed and the ports released however the daemon
//! is stopped, and SIGHUP reloads the configuration).

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own; the signal numbers are valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it starts
/// afterwards, so that one thread takes them with [`wait_termination`].
pub fn block_termination() {
    let set = termination_set();
    // SAFETY: a valid signal set; threads spawned afterwards inherit the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked everywhere by [`block_termination`]);
/// returns which.
pub fn wait_termination() -> i32 {
    let set = termination_set();
    let mut sig = 0;
    // SAFETY: the set is valid and blocked in every thread; sigwait writes one int.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}
