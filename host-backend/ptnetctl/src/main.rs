//! `ptnetctl`: list, create and destroy ptnetd's switches and ports, attach host interfaces to
//! switches or give them to one client, serve ports to VMs (and print their QEMU arguments),
//! and show the counters. This module: the commands, the request each sends, and how each
//! reply prints; `top`: the live views (`top`, `list --watch`).

mod top;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ptnet_proto::{
    self as proto, NicEntry, PortEntry, PortRequest, Profile, Reply, Request, VmDevice, VmRequest,
};

/// Control ptnetd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// ptnetd's control socket (default: $PTNET_SOCKET or /run/ptnetd/ptnetd.sock).
    #[arg(short, long)]
    socket: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Switches, ports and pipes, with their counters.
    List {
        /// Print it again every SECONDS, in place (Ctrl-C ends).
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// A live table of every port's rates (frames, bits, drops, kicks and interrupts per
    /// second), busiest first, refreshed in place (Ctrl-C ends).
    Top {
        /// Seconds between tables.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many tables (and print them one after the other, not in place).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Counters of one port (or all).
    Stats {
        /// Port name; all ports if omitted.
        port: Option<String>,
    },
    /// Create a VALE switch.
    CreateSwitch {
        /// `valeX`.
        name: String,
    },
    /// Destroy a VALE switch (no port may be attached).
    DestroySwitch {
        /// `valeX`.
        name: String,
    },
    /// Create a persistent port: `valeX:Y`, or a pipe `X{N` (both ends).
    CreatePort {
        /// Port name.
        name: String,
        /// Rings per direction.
        #[arg(long, default_value_t = 1)]
        rings: u32,
        /// Slots per ring.
        #[arg(long, default_value_t = 1024)]
        slots: u32,
        /// Extra buffers.
        #[arg(long, default_value_t = 0)]
        extra_bufs: u32,
        /// Put the port in the switch's shared region, which the switch's other trusted ports
        /// (and their clients) map too; the switch still copies between ports.
        #[arg(long)]
        trusted: bool,
        /// The only source MAC the port may send from (port security).
        #[arg(long)]
        mac_lock: Option<String>,
    },
    /// Destroy a persistent port (it must not be attached).
    DestroyPort {
        /// Port name.
        name: String,
    },
    /// Attach a host interface to a switch as port `SWITCH:IFNAME` (netmap's `vale-ctl -a`):
    /// frames from the interface enter the switch, frames for the port leave through it.
    AttachNic {
        /// `valeX` (created if needed).
        switch: String,
        /// An existing host interface.
        ifname: String,
        /// auto (netmap if /dev/netmap exists, else af_packet), af_packet, af_xdp, netmap.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Buffer size of the port: the largest frame it carries (MTU + 18 must fit).
        #[arg(long)]
        buf_size: Option<u32>,
        /// Also connect the host's own stack to the switch through a tap the daemon creates
        /// (netmap's host rings, `vale-ctl -h`): named ptnet-IFNAME, or TAP if given.
        #[arg(long, value_name = "TAP", num_args = 0..=1, default_missing_value = "")]
        host_stack: Option<String>,
    },
    /// Give a host interface a stand-alone port for one client or VM (netmap's `netmap:eth0`):
    /// the port is named IFNAME; its TX rings go out of the interface, its RX rings receive
    /// every frame of the interface. `destroy-port IFNAME` removes it.
    CreateNicPort {
        /// An existing host interface.
        ifname: String,
        /// auto (netmap if /dev/netmap exists, else af_packet), af_packet, af_xdp, netmap.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Buffer size of the port: the largest frame it carries (MTU + 18 must fit).
        #[arg(long)]
        buf_size: Option<u32>,
        /// Ring pairs: more than one come from AF_PACKET fanout (PACKET_FANOUT_HASH).
        #[arg(long, default_value_t = 1)]
        rings: u32,
    },
    /// Detach a host interface from a switch (and its host-stack tap).
    DetachNic {
        /// `valeX`.
        switch: String,
        /// The interface.
        ifname: String,
    },
    /// Serve a port to a VM as a ptnet device over vhost-user (the port is created if needed
    /// and belongs to the VM while served); then `qemu-args PORT` prints QEMU's arguments.
    ServeVm {
        #[command(flatten)]
        vm: VmArgs,
        /// Trusted profile (needed for pipe ends and shared-region ports).
        #[arg(long)]
        trusted: bool,
    },
    /// Serve a port to a VM (or a DPDK `virtio_user`) as a virtio-net device over vhost-user
    /// (`-netdev vhost-user` + `virtio-net-pci`); `qemu-args PORT` prints QEMU's arguments,
    /// `stop-vm PORT` ends it.
    ServeVirtioNet {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Stop serving a port to a VM.
    StopVm {
        /// Port name.
        port: String,
    },
    /// Print the QEMU arguments that give a VM the ptnet device of a served port.
    QemuArgs {
        /// Port name.
        port: String,
        /// The VM's memory size, as QEMU's `-m` takes it: guest RAM must be a shared memory
        /// backend of that size for the daemon to reach it.
        #[arg(long, default_value = "1G")]
        mem: String,
    },
}

impl Cmd {
    /// The request this command sends, and what of a listing it prints.
    fn request(&self) -> (Request, View) {
        match self {
            Cmd::List { .. } | Cmd::Top { .. } => (Request::List, View::All),
            Cmd::Stats { port } => (Request::List, View::Ports(port.clone())),
            Cmd::CreateSwitch { name } => (Request::CreateSwitch { name: name.clone() }, View::All),
            Cmd::DestroySwitch { name } => {
                (Request::DestroySwitch { name: name.clone() }, View::All)
            }
            Cmd::CreatePort {
                name,
                rings,
                slots,
                extra_bufs,
                trusted,
                mac_lock,
            } => (
                Request::CreatePort(PortRequest {
                    port: name.clone(),
                    tx_rings: Some(*rings),
                    rx_rings: Some(*rings),
                    slots: Some(*slots),
                    extra_bufs: *extra_bufs,
                    profile: if *trusted {
                        Profile::Trusted
                    } else {
                        Profile::Untrusted
                    },
                    busy_poll: false,
                    mac_lock: mac_lock.clone(),
                }),
                View::All,
            ),
            Cmd::DestroyPort { name } => (Request::DestroyPort { port: name.clone() }, View::All),
            Cmd::AttachNic {
                switch,
                ifname,
                backend,
                buf_size,
                host_stack,
            } => (
                Request::AttachNic {
                    switch: switch.clone(),
                    ifname: ifname.clone(),
                    backend: Some(backend.clone()),
                    buf_size: *buf_size,
                    host_stack: host_stack.is_some(),
                    host_stack_tap: host_stack.clone().filter(|t| !t.is_empty()),
                },
                View::All,
            ),
            Cmd::CreateNicPort {
                ifname,
                backend,
                buf_size,
                rings,
            } => (
                Request::CreateNicPort {
                    ifname: ifname.clone(),
                    backend: Some(backend.clone()),
                    buf_size: *buf_size,
                    rings: Some(*rings),
                },
                View::All,
            ),
            Cmd::DetachNic { switch, ifname } => (
                Request::DetachNic {
                    switch: switch.clone(),
                    ifname: ifname.clone(),
                },
                View::All,
            ),
            Cmd::ServeVm { vm, trusted } => {
                let profile = if *trusted {
                    Profile::Trusted
                } else {
                    Profile::Untrusted
                };
                (vm.request(VmDevice::Ptnet, profile), View::All)
            }
            Cmd::ServeVirtioNet { vm } => (
                vm.request(VmDevice::VirtioNet, Profile::Untrusted),
                View::All,
            ),
            Cmd::StopVm { port } => (Request::StopVm { port: port.clone() }, View::All),
            Cmd::QemuArgs { port, mem } => (
                Request::QemuArgs { port: port.clone() },
                View::QemuArgs { mem: mem.clone() },
            ),
        }
    }
}

/// What of a listing to print.
enum View {
    /// Switches and every port (`list`).
    All,
    /// The ports' table alone, of one port if named (`stats [PORT]`).
    Ports(Option<String>),
    /// QEMU arguments for a VM of `mem` bytes of RAM (`qemu-args`).
    QemuArgs {
        /// QEMU's `-m`.
        mem: String,
    },
}

/// Prints `reply` (as JSON with `json`), a listing as `view` says; the exit code says whether
/// the request succeeded.
/// What serving a port to a VM takes, whichever the device.
#[derive(Debug, clap::Args)]
struct VmArgs {
    /// Port name (`valeX:Y`, or a pipe end).
    port: String,
    /// Name of the vhost-user socket the frontend (QEMU, DPDK) connects to, a file in the
    /// daemon's VM socket directory (`[daemon] vm_socket_dir`, default /run/ptnetd/vm);
    /// default: after the port (`vale0:vm1` → `vale0-vm1.sock`). `qemu-args` prints the path.
    #[arg(long, value_name = "NAME")]
    socket: Option<String>,
    /// MAC address the guest sees.
    #[arg(long)]
    mac: Option<String>,
    /// Busy-poll the device (its sync loop or queue workers).
    #[arg(long)]
    busy_poll: bool,
    /// The VM may send from its device's MAC only (port security; the default for
    /// serve-virtio-net).
    #[arg(long, conflicts_with = "any_mac")]
    mac_lock: bool,
    /// The VM may send from any source MAC (the default for serve-vm).
    #[arg(long)]
    any_mac: bool,
}

impl VmArgs {
    fn request(&self, device: VmDevice, profile: Profile) -> Request {
        Request::ServeVm(VmRequest {
            port: PortRequest {
                port: self.port.clone(),
                profile,
                busy_poll: self.busy_poll,
                ..Default::default()
            },
            socket: self.socket.clone(),
            mac: self.mac.clone(),
            device,
            // Neither flag: the device's default.
            mac_lock: match (self.mac_lock, self.any_mac) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        })
    }
}

fn show(reply: Reply, json: bool, view: &View) -> ExitCode {
    match reply {
        Reply::Ok => {
            if json {
                println!("{{\"result\":\"ok\"}}");
            }
            ExitCode::SUCCESS
        }
        Reply::Error { message } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "result": "error", "message": message })
                );
            } else {
                eprintln!("ptnetctl: {message}");
            }
            ExitCode::FAILURE
        }
        Reply::Listing { switches, pipes } => {
            let mut ports: Vec<&PortEntry> = switches
                .iter()
                .flat_map(|s| &s.ports)
                .chain(&pipes)
                .collect();
            if let View::Ports(Some(p)) = view {
                ports.retain(|e| &e.name == p);
                if ports.is_empty() {
                    eprintln!("ptnetctl: no port {p}");
                    return ExitCode::FAILURE;
                }
            }
            if json {
                let v = match view {
                    View::Ports(_) => serde_json::to_value(&ports),
                    View::All | View::QemuArgs { .. } => serde_json::to_value(
                        serde_json::json!({ "switches": switches, "pipes": pipes }),
                    ),
                };
                println!("{}", v.unwrap_or_default());
            } else if let View::All = view {
                for s in &switches {
                    println!("{} ({} ports)", s.name, s.ports.len());
                }
                print_ports(&ports);
                print_vms(&ports);
            } else {
                print_ports(&ports);
                print_vms(&ports);
            }
            ExitCode::SUCCESS
        }
        Reply::NicAttached {
            port,
            host_stack,
            nic,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "result": "ok", "port": port, "host_stack": host_stack, "nic": nic
                    })
                );
            } else {
                println!(
                    "{port}: {} attached, backend {}",
                    nic.ifname,
                    nic.backend.as_deref().unwrap_or("-")
                );
                if let Some(t) = host_stack {
                    println!("host stack: tap {t} (port on the same switch)");
                }
                if let Some(n) = &nic.note {
                    println!("note: {n}");
                }
            }
            ExitCode::SUCCESS
        }
        Reply::QemuArgs { args } => {
            let mem = match view {
                View::QemuArgs { mem } => mem.as_str(),
                _ => "1G",
            };
            // Guest RAM must be shared with the daemon, as large as the VM's -m.
            let memory = [
                "-m".to_owned(),
                mem.to_owned(),
                "-object".to_owned(),
                format!("memory-backend-memfd,id=mem,size={mem},share=on"),
                "-machine".to_owned(),
                "memory-backend=mem".to_owned(),
            ];
            if json {
                println!("{}", serde_json::json!({ "args": args, "memory": memory }));
            } else {
                for c in memory.chunks(2) {
                    println!("{} {} \\", c[0], shell_quote(&c[1]));
                }
                let line: Vec<String> = args
                    .chunks(2)
                    .map(|c| {
                        c.iter()
                            .map(|a| shell_quote(a))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                println!("{}", line.join(" \\\n"));
            }
            ExitCode::SUCCESS
        }
        Reply::Attached(_) => {
            eprintln!("ptnetctl: unexpected reply");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let socket = a.socket.clone().unwrap_or_else(proto::socket_path);
    let every = |s: f64| Duration::from_secs_f64(s.clamp(0.1, 3600.0));
    match a.cmd {
        Cmd::Top { interval, count } => {
            return top::top(&socket, every(interval), count, count.is_none());
        }
        Cmd::List { watch: Some(s) } => {
            let view = View::All;
            return top::repeat(&socket, every(s), None, |reply| {
                print!("\x1b[H\x1b[2J");
                show(reply, a.json, &view) == ExitCode::SUCCESS
            });
        }
        _ => {}
    }
    let (request, view) = a.cmd.request();
    match proto::call(&socket, request) {
        Ok((reply, _, _)) => show(reply, a.json, &view),
        Err(e) => {
            eprintln!(
                "ptnetctl: cannot reach ptnetd at {socket}: {}",
                proto::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn print_vms(ports: &[&PortEntry]) {
    let vms: Vec<_> = ports
        .iter()
        .filter_map(|p| p.vm.as_ref().map(|v| (&p.name, v)))
        .collect();
    if vms.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<10} {:<32} {:<8} {:<9} {:>6} {:>7} {:>10} {:>7}",
        "vm port",
        "kind",
        "vhost-user socket",
        "device",
        "memory",
        "starts",
        "refused",
        "irqs",
        "vnethdr"
    );
    for (name, v) in vms {
        println!(
            "{:<20} {:<10} {:<32} {:<8} {:<9} {:>6} {:>7} {:>10} {:>7}",
            name,
            v.device.to_string(),
            v.socket,
            if v.running { "running" } else { "stopped" },
            if v.mem_ready { "mapped" } else { "-" },
            v.starts,
            v.refused,
            v.irqs,
            v.vnet_hdr_len
        );
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn print_ports(ports: &[&PortEntry]) {
    if ports.is_empty() {
        return;
    }
    println!(
        "{:<20} {:<5} {:<8} {:>4} {:>9} {:>12} {:>12} {:>10} {:>10} {:>6}  sends from",
        "port",
        "kind",
        "client",
        "mem",
        "rings",
        "tx_packets",
        "rx_packets",
        "rx_drops",
        "tx_drops",
        "resets"
    );
    for p in ports {
        println!(
            "{:<20} {:<5} {:<8} {:>4} {:>9} {:>12} {:>12} {:>10} {:>10} {:>6}  {}",
            p.name,
            p.kind,
            if p.attached { "attached" } else { "-" },
            p.mem_id,
            format!("{}x{}", p.tx_rings, p.slots),
            p.stats.tx_packets,
            p.stats.rx_packets,
            p.stats.rx_drops,
            p.stats.tx_drops,
            p.stats.ring_resets,
            p.mac_lock.as_deref().unwrap_or("any")
        );
    }
    let nics: Vec<(&str, &NicEntry)> = ports
        .iter()
        .filter_map(|p| p.nic.as_ref().map(|n| (p.name.as_str(), n)))
        .collect();
    if nics.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<9} {:<5} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
        "nic port",
        "backend",
        "link",
        "rx_packets",
        "rx_bytes",
        "rx_drops",
        "tx_packets",
        "tx_bytes",
        "tx_drops",
        "flaps"
    );
    for (name, n) in &nics {
        println!(
            "{:<20} {:<9} {:<5} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
            name,
            n.backend.as_deref().unwrap_or("-"),
            n.link,
            n.rx_packets,
            n.rx_bytes,
            n.rx_drops,
            n.tx_packets,
            n.tx_bytes,
            n.tx_drops,
            n.link_changes
        );
    }
    for (name, n) in &nics {
        if let Some(note) = &n.note {
            println!("{name}: {note}");
        }
    }
}
