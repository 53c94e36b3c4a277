//! `[daemon] cpus` / `--cpus`: the CPUs every thread of the daemon runs on. Ports' workers,
//! the control socket's threads and the VM threads are pinned alike, so that a benchmark (or
//! an operator) can give the switch its own cores and the clients the others.
//!
//! Every thread the daemon has is pinned when the list is applied (all of `/proc/self/task`,
//! so `SIGHUP` moves running workers too), and threads started later inherit it from the
//! thread that starts them. The only `unsafe` is the `sched_setaffinity(2)` call in
//! `set_affinity`.

use std::fmt;
use std::io;
use std::sync::OnceLock;

/// The highest CPU number a list may name (`CPU_SETSIZE` - 1).
pub const MAX_CPU: usize = libc::CPU_SETSIZE as usize - 1;

/// A set of CPU numbers, written as Linux writes them (`0`, `1-3`, `0,2-5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    cpus: Vec<usize>,
}

impl CpuList {
    /// Parses a list in `cpuset(7)`'s list format: comma-separated numbers and inclusive
    /// ranges, each at most [`MAX_CPU`].
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |t: &str| -> Result<usize, String> {
                let n: usize = t
                    .trim()
                    .parse()
                    .map_err(|_| format!("{t:?} is not a CPU number"))?;
                if n > MAX_CPU {
                    return Err(format!("CPU {n} is above {MAX_CPU}"));
                }
                Ok(n)
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("range {part:?} runs backwards"));
                    }
                    cpus.extend(a..=b);
                }
                None if part.is_empty() => return Err(format!("empty entry in {s:?}")),
                None => cpus.push(num(part)?),
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList { cpus })
    }

    /// The CPU numbers, ascending, each once.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Pins every thread of this process to the list. Fails, changing nothing, when the
    /// kernel lets this process run on none of the CPUs (offline, absent, or outside its
    /// cpuset).
    pub fn pin_process(&self) -> io::Result<()> {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in &self.cpus {
            // SAFETY: `c` <= MAX_CPU < CPU_SETSIZE, the set's size (checked in `parse`).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // The calling thread first: the kernel's refusal then changes nothing.
        if let Err(e) = set_affinity(0, &set) {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("none of the CPUs {self} is available on this machine"),
                ),
                _ => e,
            });
        }
        for entry in std::fs::read_dir("/proc/self/task")? {
            let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            match set_affinity(tid, &set) {
                // A thread that ended since the directory was read.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                r => r?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for CpuList {
    /// Ranges collapsed: `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cpus.len() {
            let mut j = i;
            while j + 1 < self.cpus.len() && self.cpus[j + 1] == self.cpus[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if i == j {
                write!(f, "{}", self.cpus[i])?;
            } else {
                write!(f, "{}-{}", self.cpus[i], self.cpus[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// The CPUs the daemon could run on when it started (before any list was applied).
static AT_START: OnceLock<CpuList> = OnceLock::new();

/// Brings the daemon to `[daemon] cpus`: pins every thread to `list`, or, with none, back to
/// the CPUs it could run on when it started (the first call records those).
pub fn apply(list: Option<&CpuList>) -> io::Result<()> {
    let start = match AT_START.get() {
        Some(s) => s,
        None => {
            let cpus = allowed_cpus()?;
            AT_START.get_or_init(|| CpuList { cpus })
        }
    };
    list.unwrap_or(start).pin_process()
}

/// The CPUs this thread may run on now.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `c` < CPU_SETSIZE, the set's size.
    Ok((0..=MAX_CPU)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// `sched_setaffinity(tid, set)`.
fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the kernel only reads it.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(set), set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_linux_writes_them_and_print_back_collapsed() {
        let l = CpuList::parse("3,0-1, 5-6,1").unwrap();
        assert_eq!(l.cpus(), &[0, 1, 3, 5, 6]);
        assert_eq!(l.to_string(), "0-1,3,5-6");
        assert_eq!(CpuList::parse("7").unwrap().to_string(), "7");
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (s, says) in [
            ("", "empty entry"),
            ("1,,2", "empty entry"),
            ("a", "not a CPU number"),
            ("3-1", "runs backwards"),
            ("0-99999", "above"),
            ("-1", "not a CPU number"),
        ] {
            let e = CpuList::parse(s).unwrap_err();
            assert!(e.contains(says), "{s:?}: {e}");
        }
    }

    #[test]
    fn a_list_with_no_available_cpu_is_refused_and_changes_nothing() {
        let before = allowed_cpus().unwrap();
        let e = CpuList::parse(&MAX_CPU.to_string())
            .unwrap()
            .pin_process()
            .unwrap_err();
        assert!(e.to_string().contains("none of the CPUs"), "{e}");
        assert_eq!(allowed_cpus().unwrap(), before);
    }
}
