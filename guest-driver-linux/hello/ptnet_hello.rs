// SPDX-License-Identifier: GPL-2.0

//! `ptnet_hello`: the smallest Rust-for-Linux module of the project.
//!
//! It proves the whole guest chain end to end (the Rust-enabled guest kernel, the
//! out-of-tree module build, loading and unloading in a TCG guest) before the real
//! `ptnet` driver exists. On load it computes something in Rust from its parameter and
//! prints it; on unload it prints what it kept. The VM test asserts on both lines
//! (`pr_info!` prefixes them with the module name, `ptnet_hello: `).

use kernel::prelude::*;

module! {
    type: PtnetHello,
    name: "ptnet_hello",
    authors: ["ptnet developers"],
    description: "ptnet guest toolchain smoke test",
    license: "GPL",
    params: {
        rings: u32 {
            default: 4,
            description: "How many rings to pretend to set up (1..=64)",
        },
    },
}

/// Rings we refuse to pretend beyond: keeps the allocation below small and bounded.
const MAX_RINGS: u32 = 64;

struct PtnetHello {
    /// One value per pretend ring: its number of slots, as `256 << (ring % 4)`.
    slots: KVec<u32>,
}

impl kernel::Module for PtnetHello {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let rings = module_parameters::rings.value();
        if rings == 0 || rings > MAX_RINGS {
            pr_err!("rings={} is outside 1..={}\n", rings, MAX_RINGS);
            return Err(EINVAL);
        }
        let mut slots = KVec::with_capacity(rings as usize, GFP_KERNEL)?;
        for ring in 0..rings {
            slots.push(256u32 << (ring % 4), GFP_KERNEL)?;
        }
        let total: u32 = slots.iter().sum();
        pr_info!("hello from Rust, rings={} total_slots={}\n", rings, total);
        Ok(PtnetHello { slots })
    }
}

impl Drop for PtnetHello {
    fn drop(&mut self) {
        pr_info!("goodbye from Rust, released {} rings\n", self.slots.len());
    }
}
