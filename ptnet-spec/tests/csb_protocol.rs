//! The CSB protocol under real concurrency: an application thread produces into a TX ring, a
//! kernel thread consumes, both suppress notifications while busy and re-enable them with the
//! double check. Every packet must arrive in order and neither side may ever sleep through
//! work (a lost wake-up shows up as a timeout).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use ptnet_spec::csb::{CsbAtok, CsbKtoa};
use ptnet_spec::ring::{nm_add, nm_next, nm_prev, KringIndices};

/// A counting notification, like an eventfd.
#[derive(Default)]
struct Event {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Event {
    fn signal(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    /// Waits for a signal; false on timeout.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.count.lock().unwrap();
        let (mut g, res) = self
            .cv
            .wait_timeout_while(guard, timeout, |c| *c == 0)
            .unwrap();
        if res.timed_out() {
            return false;
        }
        *g = 0;
        true
    }
}

struct Shared {
    atok: CsbAtok,
    ktoa: CsbKtoa,
    slots: Vec<AtomicU64>,
    kick: Event,
    irq: Event,
}

const N: u32 = 64;
const PACKETS: u64 = 200_000;
const STALL: Duration = Duration::from_secs(10);

fn application(s: &Shared) -> Result<u64, String> {
    let (mut head, mut tail) = (0u32, N - 1);
    let mut seq = 0u64;
    let mut kicks = 0u64;
    while seq < PACKETS {
        // Fill what we own, in small random-ish bursts.
        let burst = 1 + (seq % 7) as u32;
        let mut moved = false;
        for _ in 0..burst {
            if head == tail || seq == PACKETS {
                break;
            }
            s.slots[head as usize].store(seq, Ordering::Relaxed);
            seq += 1;
            head = nm_next(head, N);
            moved = true;
        }
        if moved && s.atok.appl_publish(&s.ktoa, head, head) {
            s.kick.signal();
            kicks += 1;
        }
        tail = s.ktoa.appl_read().hwtail;
        if head == tail {
            // Ring full: ask for an interrupt, double check, then sleep.
            tail = s.atok.appl_enable_notifications(&s.ktoa).hwtail;
            if head == tail && !s.irq.wait(STALL) {
                return Err(format!("application slept through work at head {head}"));
            }
            s.atok.appl_disable_notifications();
            tail = s.ktoa.appl_read().hwtail;
        }
    }
    Ok(kicks)
}

fn kernel(s: &Shared) -> Result<u64, String> {
    let mut k = KringIndices::new_tx(N);
    let mut expect = 0u64;
    let mut irqs = 0u64;
    while expect < PACKETS {
        s.ktoa.kern_disable_kicks();
        let mut a = s.atok.kern_read();
        loop {
            let v = k
                .txsync_prologue(a.head, a.cur)
                .map_err(|e| format!("valid application rejected: {e} ({k:?})"))?;
            // "Transmit" [hwcur, head).
            while k.hwcur != v.head {
                let got = s.slots[k.hwcur as usize].load(Ordering::Relaxed);
                if got != expect {
                    return Err(format!("slot {} had {got}, expected {expect}", k.hwcur));
                }
                expect += 1;
                k.hwcur = nm_next(k.hwcur, N);
            }
            k.rhead = v.head;
            k.rcur = v.cur;
            k.hwtail = nm_prev(k.hwcur, N);
            k.rtail = k.hwtail;
            if s.ktoa.kern_publish(&s.atok, k.hwcur, k.hwtail) {
                s.irq.signal();
                irqs += 1;
            }
            a = s.atok.kern_read();
            if a.head != k.rhead {
                continue;
            }
            // Nothing new: enable kicks with the double check.
            a = s.ktoa.kern_enable_kicks(&s.atok);
            if a.head != k.rhead {
                s.ktoa.kern_disable_kicks();
                continue;
            }
            break;
        }
        if expect == PACKETS {
            break;
        }
        if !s.kick.wait(STALL) {
            return Err(format!("kernel slept through work at hwcur {}", k.hwcur));
        }
    }
    assert_eq!(nm_add(0, (PACKETS % u64::from(N)) as u32, N), k.hwcur);
    Ok(irqs)
}

#[test]
fn csb_protocol_delivers_every_packet_without_lost_wakeups() {
    let s = Arc::new(Shared {
        atok: CsbAtok::default(),
        ktoa: CsbKtoa::default(),
        slots: (0..N).map(|_| AtomicU64::new(u64::MAX)).collect(),
        kick: Event::default(),
        irq: Event::default(),
    });
    // The kernel side initialises the CSB before the application starts (CSB attach).
    let k = KringIndices::new_tx(N);
    s.ktoa.kern_init(k.hwcur, k.hwtail);
    s.atok.kern_init(0, 0);
    let s2 = Arc::clone(&s);
    let kern = thread::Builder::new()
        .name("kernel".into())
        .spawn(move || kernel(&s2))
        .unwrap();
    let appl = application(&s);
    let kern = kern.join().expect("kernel thread panicked");
    let (kicks, irqs) = match (appl, kern) {
        (Ok(k), Ok(i)) => (k, i),
        (a, k) => panic!("application: {a:?}, kernel: {k:?}"),
    };
    // Suppression must actually suppress: far fewer notifications than packets.
    println!("{PACKETS} packets, {kicks} kicks, {irqs} interrupts");
    assert!(kicks < PACKETS, "{kicks} kicks for {PACKETS} packets");
}
