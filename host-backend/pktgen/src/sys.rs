//! The few process-wide system calls of the tool: signals that end a run, and the CPU time
//! it used. (The netmap device's ioctls live with it in [`crate::netmap`], the AF_PACKET
//! socket's in [`crate::packet`].)

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe; a second signal means "now".
        unsafe { libc::_exit(130) };
    }
}

/// Makes SIGINT and SIGTERM end the run at the next batch (with its summary); a second
/// signal exits at once.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic (and calls _exit), which is
        // async-signal-safe; replacing the default disposition affects nothing else here.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The whole process's CPU time so far, user and system seconds (`getrusage(RUSAGE_SELF)`:
/// all its threads).
pub fn cpu_times() -> Option<(f64, f64)> {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass, which lives across the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (rc == 0).then(|| (s(ru.ru_utime), s(ru.ru_stime)))
}
