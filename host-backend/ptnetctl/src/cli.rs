//! The command line (clap): the commands, and the request each sends; the man pages
//! `ptnetctl(8)` and `ptnetctl-COMMAND(8)` are generated from it.

use clap::{Parser, Subcommand};
use ptnet_proto::{PortRequest, Profile, Request, VmDevice, VmRequest, VmTransport};

/// Control ptnetd.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// ptnetd's control socket (default: $PTNET_SOCKET or /run/ptnetd/ptnetd.sock).
    #[arg(short, long)]
    pub socket: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
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
        /// The port and its VM.
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
        /// The port and its VM.
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
    /// Print libvirt domain XML for a served port: the pieces to add to a domain (`virsh
    /// edit`), or with --domain a whole domain (`virsh define`). virtio-net ports become an
    /// `<interface type='vhostuser'>`, ptnet devices `<qemu:commandline>` arguments.
    LibvirtXml {
        /// Port name.
        port: String,
        /// What a whole domain needs.
        #[command(flatten)]
        domain: crate::libvirt::DomainArgs,
    },
}

impl Cmd {
    /// The request this command sends, and what of a listing it prints.
    pub fn request(&self) -> (Request, View) {
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
            // Its first request; `libvirt::run` makes the second (a ptnet device's arguments).
            Cmd::LibvirtXml { .. } => (Request::List, View::All),
        }
    }
}

/// What serving a port to a VM takes, whichever the device.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Port name (`valeX:Y`, or a pipe end).
    pub port: String,
    /// Name of the vhost-user socket the frontend (QEMU, DPDK) connects to, a file in the
    /// daemon's VM socket directory (`[daemon] vm_socket_dir`, default /run/ptnetd/vm);
    /// default: after the port (`vale0:vm1` → `vale0-vm1.sock`). `qemu-args` prints the path.
    #[arg(long, value_name = "NAME")]
    pub socket: Option<String>,
    /// MAC address the guest sees.
    #[arg(long)]
    pub mac: Option<String>,
    /// Busy-poll the device (its sync loop or queue workers).
    #[arg(long)]
    pub busy_poll: bool,
    /// The VM may send from its device's MAC only (port security; the default for
    /// serve-virtio-net).
    #[arg(long, conflicts_with = "any_mac")]
    pub mac_lock: bool,
    /// The VM may send from any source MAC (the default for serve-vm).
    #[arg(long)]
    pub any_mac: bool,
    /// How QEMU carries the device: `vhost-user` (default; a ptnet device needs the
    /// project's QEMU) or `ivshmem` (a ptnet device on any QEMU's stock `ivshmem-doorbell`).
    #[arg(long, value_name = "TRANSPORT", default_value = "vhost-user")]
    pub transport: VmTransport,
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
            transport: self.transport,
        })
    }
}

/// What of a listing to print.
pub enum View {
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
