//! A vhost-user frontend as QEMU's vhost-user-net is, for tests that must misbehave where
//! QEMU would not: guest RAM in a memfd the test maps and may cut short, the first queue pair
//! set up and enabled (RX at 0x10000, TX at 0x20000 of guest RAM, 64 entries each), receive
//! buffers posted by hand, and the kick and call eventfds in the test's hands.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Guest RAM: 1 MiB at GPA 0.
pub const RAM: u64 = 1 << 20;
/// Entries per queue.
pub const QSIZE: u16 = 64;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VRING_DESC_F_WRITE: u16 = 2;
/// Where receive buffers start (2 KiB each).
const BUFS: u64 = 0x40000;

/// Queue `q`'s descriptor table, avail ring and used ring (guest-physical).
fn layout(q: usize) -> (u64, u64, u64) {
    let base = 0x10000 * (q as u64 + 1);
    let avail = base + 16 * u64::from(QSIZE);
    let used = (avail + 6 + 2 * u64::from(QSIZE) + 3) & !3;
    (base, avail, used)
}

/// A memfd of `len` bytes, sealed against shrinking or not.
pub fn memfd(name: &std::ffi::CStr, len: u64, sealed: bool) -> File {
    let flags = if sealed { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: a valid name; the new descriptor is owned by the File alone.
    let f = unsafe { File::from_raw_fd(libc::memfd_create(name.as_ptr(), flags)) };
    f.set_len(len).unwrap();
    if sealed {
        // SAFETY: F_ADD_SEALS changes only our own memfd's seals.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
        assert_eq!(r, 0);
    }
    f
}

/// A connected frontend and its guest.
pub struct NetVm {
    pub fe: Frontend,
    pub ram: File,
    base: *mut u8,
    pub calls: Vec<EventFd>,
    pub kicks: Vec<EventFd>,
}

impl NetVm {
    /// Connects to `socket`, negotiates VERSION_1 (no mergeable buffers, no event index),
    /// shares `ram` (mapped here too) and starts queues 0 (RX) and 1 (TX).
    pub fn start(socket: &Path, ram: File) -> Self {
        // SAFETY: a shared mapping of the whole memfd, at an address the kernel chooses.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RAM as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                ram.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let va = base as u64;
        let mut fe = Frontend::connect(socket, 3).expect("connect to the VM socket");
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        let want = VIRTIO_F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        assert_eq!(offered & want, want, "features {offered:#x}");
        fe.set_features(want).unwrap();
        let pf = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)
            .unwrap();
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: RAM,
            userspace_addr: va,
            mmap_offset: 0,
            mmap_handle: ram.as_raw_fd(),
        }])
        .unwrap();
        let (mut calls, mut kicks) = (Vec::new(), Vec::new());
        for q in 0..2usize {
            let (desc, avail, used) = layout(q);
            fe.set_vring_num(q, QSIZE).unwrap();
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: va + desc,
                    used_ring_addr: va + used,
                    avail_ring_addr: va + avail,
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(q, 0).unwrap();
            let call = EventFd::new(EFD_NONBLOCK).unwrap();
            let kick = EventFd::new(EFD_NONBLOCK).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            fe.set_vring_kick(q, &kick).unwrap();
            fe.set_vring_enable(q, true).unwrap();
            calls.push(call);
            kicks.push(kick);
        }
        NetVm {
            fe,
            ram,
            base: base.cast(),
            calls,
            kicks,
        }
    }

    /// The 16-bit word at guest-physical `gpa`.
    fn word(&self, gpa: u64) -> &AtomicU16 {
        assert!(gpa + 2 <= RAM && gpa % 2 == 0);
        // SAFETY: inside the mapping (checked), aligned; the device writes it concurrently,
        // hence an atomic.
        unsafe { &*self.base.add(gpa as usize).cast::<AtomicU16>() }
    }

    /// Posts `n` receive buffers of 2 KiB on the RX queue and kicks it.
    pub fn post_rx(&self, n: u16) {
        let (desc, avail, _) = layout(0);
        for i in 0..n.min(QSIZE) {
            let d = desc + 16 * u64::from(i);
            // SAFETY: a descriptor inside the mapping (16 bytes at a 16-byte aligned offset
            // below RAM); the device reads it only after the avail index below is published.
            unsafe {
                let p = self.base.add(d as usize);
                p.cast::<u64>().write_volatile(BUFS + 2048 * u64::from(i));
                p.add(8).cast::<u32>().write_volatile(2048);
                p.add(12).cast::<u16>().write_volatile(VRING_DESC_F_WRITE);
                p.add(14).cast::<u16>().write_volatile(0);
            }
            self.word(avail + 4 + 2 * u64::from(i))
                .store(i, Ordering::Relaxed);
        }
        self.word(avail + 2).store(n.min(QSIZE), Ordering::Release);
        self.kicks[0].write(1).unwrap();
    }

    /// The RX queue's used index: buffers the device filled.
    pub fn rx_used(&self) -> u16 {
        self.word(layout(0).2 + 2).load(Ordering::Acquire)
    }
}

impl Drop for NetVm {
    fn drop(&mut self) {
        // SAFETY: unmaps what `start` mapped; nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), RAM as usize) };
    }
}
