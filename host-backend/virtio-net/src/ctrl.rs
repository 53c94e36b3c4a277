//! The control virtqueue (virtio 1.2 §5.1.6.5): RX mode, MAC and MQ commands are
//! acknowledged. The port is on a learning switch that delivers what it delivers: promiscuous
//! and multicast modes and MAC filter tables change nothing, so acknowledging them is honest;
//! `MAC_ADDR_SET` updates the config space; `VQ_PAIRS_SET` is accepted for any count the
//! device offers (every pair the driver set up is served). Anything else gets
//! `VIRTIO_NET_ERR`.

use std::sync::{Arc, Mutex};

use ptnet_vhost_user::guest::GuestMem;
use ptnet_vhost_user::vring::HookedVring;
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET,
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX, VIRTIO_NET_ERR,
    VIRTIO_NET_OK,
};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory};

use crate::config::NetConfig;
use crate::virtq::{Broken, UsedBatch};

/// Most bytes of a command read (class, command, data).
const MAX_CMD: usize = 64;
/// Most commands answered per pass.
const CTRL_BATCH: usize = 64;

/// The answer to one command.
pub fn answer(cmd: &[u8], pairs: u16, config: &Mutex<NetConfig>) -> u8 {
    let ok = VIRTIO_NET_OK as u8;
    let err = VIRTIO_NET_ERR as u8;
    let (Some(&class), Some(&code)) = (cmd.first(), cmd.get(1)) else {
        return err;
    };
    // PANIC: `cmd` has at least the two bytes just read.
    let data = &cmd[2..];
    match u32::from(class) {
        VIRTIO_NET_CTRL_RX => {
            if data.is_empty() {
                err
            } else {
                ok
            }
        }
        VIRTIO_NET_CTRL_MAC if u32::from(code) == VIRTIO_NET_CTRL_MAC_ADDR_SET => {
            match <[u8; 6]>::try_from(data.get(..6).unwrap_or(&[])) {
                Ok(mac) => {
                    config
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .set_mac(mac);
                    ok
                }
                Err(_) => err,
            }
        }
        // MAC_TABLE_SET: filter tables are not applied (the switch learns).
        VIRTIO_NET_CTRL_MAC => ok,
        VIRTIO_NET_CTRL_MQ if u32::from(code) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET => {
            match data.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) {
                Some(n) if n >= 1 && n <= pairs => ok,
                _ => err,
            }
        }
        VIRTIO_NET_CTRL_ANNOUNCE => ok,
        _ => err,
    }
}

/// The control queue of a device, served by queue pair 0's worker.
pub struct Ctrl {
    vring: HookedVring,
    pairs: u16,
    config: Arc<Mutex<NetConfig>>,
    used: UsedBatch,
}

impl Ctrl {
    /// The control queue `vring` of a device with `pairs` queue pairs.
    pub fn new(vring: HookedVring, pairs: u16, config: Arc<Mutex<NetConfig>>) -> Self {
        Ctrl {
            vring,
            pairs,
            config,
            used: UsedBatch::with_capacity(CTRL_BATCH),
        }
    }

    /// Answers every pending command; returns how many.
    pub fn pass(&mut self, mem: &GuestMem) -> Result<u32, Broken> {
        let mem = mem.memory();
        let mut vr = self.vring.get_mut();
        let q = vr.get_queue_mut();
        if !q.ready() {
            return Ok(0);
        }
        let mut n = 0;
        {
            let mut it = q.iter(&*mem).map_err(|source| Broken::Queue {
                queue: "control",
                source,
            })?;
            while n < CTRL_BATCH as u32 {
                let Some(chain) = it.next() else { break };
                let head = chain.head_index();
                n += 1;
                let mut cmd = [0u8; MAX_CMD];
                let mut len = 0usize;
                let mut ack_at = None;
                let mut bad = false;
                for d in chain {
                    if d.is_write_only() {
                        ack_at.get_or_insert(d.addr());
                        continue;
                    }
                    // PANIC: len <= MAX_CMD always (k is cut to what is left), so
                    // cmd[len..len + k] is inside the array.
                    let k = (d.len() as usize).min(MAX_CMD - len);
                    if k > 0 && mem.read_slice(&mut cmd[len..len + k], d.addr()).is_err() {
                        bad = true;
                    }
                    len += k;
                }
                let status = if bad {
                    VIRTIO_NET_ERR as u8
                } else {
                    answer(&cmd[..len], self.pairs, &self.config)
                };
                let written = match ack_at {
                    Some(a) if mem.write_obj(status, a).is_ok() => 1,
                    _ => 0,
                };
                self.used.push(head, written);
            }
        }
        let notify = self.used.publish(q, &*mem).map_err(|source| Broken::Used {
            queue: "control",
            source,
        })?;
        drop(vr);
        if notify {
            self.vring.signal_guest();
        }
        Ok(n)
    }

    /// Enables notifications; true if commands are already pending.
    pub fn arm<M: GuestMemory>(&self, mem: &M) -> Result<bool, Broken> {
        self.vring
            .get_mut()
            .get_queue_mut()
            .enable_notification(mem)
            .map_err(|source| Broken::Queue {
                queue: "control",
                source,
            })
    }

    /// Disables notifications.
    pub fn disarm<M: GuestMemory>(&self, mem: &M) {
        let _ = self
            .vring
            .get_mut()
            .get_queue_mut()
            .disable_notification(mem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_mode_mac_and_pair_commands_are_acknowledged_and_others_refused() {
        let cfg = Mutex::new(NetConfig::new([2, 0, 0, 0, 0, 1], 2));
        let ok = VIRTIO_NET_OK as u8;
        let err = VIRTIO_NET_ERR as u8;
        assert_eq!(answer(&[0, 0, 1], 2, &cfg), ok, "promisc on");
        assert_eq!(answer(&[0, 1], 2, &cfg), err, "no data");
        assert_eq!(answer(&[1, 1, 2, 9, 9, 9, 9, 9], 2, &cfg), ok);
        assert_eq!(cfg.lock().unwrap().mac(), [2, 9, 9, 9, 9, 9]);
        assert_eq!(answer(&[1, 1, 2, 9], 2, &cfg), err, "short MAC");
        assert_eq!(answer(&[4, 0, 2, 0], 2, &cfg), ok);
        assert_eq!(
            answer(&[4, 0, 3, 0], 2, &cfg),
            err,
            "more pairs than offered"
        );
        assert_eq!(answer(&[4, 0, 0, 0], 2, &cfg), err);
        assert_eq!(answer(&[2, 0, 1, 0], 2, &cfg), err, "VLAN filtering");
        assert_eq!(answer(&[], 2, &cfg), err);
    }
}
