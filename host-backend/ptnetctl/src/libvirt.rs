//! `ptnetctl libvirt-xml PORT`: libvirt domain XML for a port served to a VM, from what the
//! daemon says about it (the listing's VM entry, and for a ptnet device its QEMU arguments).
//!
//! * a virtio-net port is libvirt's own `<interface type='vhostuser'>` (client mode, with
//!   `<reconnect>` so a restarted daemon is found again);
//! * a ptnet device over vhost-user has no libvirt element: its QEMU arguments go through
//!   `<qemu:commandline>`, and QEMU must be a build that carries the device (`<emulator>`);
//! * a ptnet device over ivshmem is libvirt's own `<shmem>` with a `<server>` (the daemon's
//!   socket) and MSI-X vectors: any QEMU;
//! * over vhost-user guest RAM must be shared with the daemon: `<memoryBacking>` with a memfd
//!   source and shared access (the ivshmem transport needs none).
//!
//! Without `--domain`, the pieces are printed for `virsh edit`, each after a comment that says
//! where it goes; with `--domain NAME`, a whole domain that boots (a kernel, or a disk image).

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ptnet_proto::{self as proto, Reply, Request, VmDevice, VmEntry, VmTransport};

/// libvirt's namespace for `<qemu:commandline>`.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// What a whole domain needs besides the port (`--domain`).
#[derive(Debug, Clone, clap::Args)]
pub struct DomainArgs {
    /// Print a whole domain of this name, not just the pieces to add to one.
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Guest RAM in MiB (whole domain).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Virtual CPUs (whole domain).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// `kvm`, or `tcg` (libvirt's domain type `qemu`, CPU model qemu64) where KVM cannot run
    /// the guest.
    #[arg(long, default_value = "kvm", value_parser = ["kvm", "tcg"])]
    pub accel: String,
    /// The QEMU binary (`<emulator>`): a ptnet device needs a build that carries it.
    #[arg(long, value_name = "PATH")]
    pub emulator: Option<PathBuf>,
    /// Boot this kernel directly (with --initrd and --cmdline).
    #[arg(long, value_name = "PATH", conflicts_with = "disk")]
    pub kernel: Option<PathBuf>,
    /// The initramfs for --kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line for --kernel.
    #[arg(long, value_name = "ARGS", requires = "kernel")]
    pub cmdline: Option<String>,
    /// Boot from this disk image (virtio, qcow2 or raw by its name's ending).
    #[arg(long, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// Write the serial console to this file instead of a pty.
    #[arg(long, value_name = "PATH")]
    pub serial_log: Option<PathBuf>,
    /// ptnet device: its PCI slot on bus 0. libvirt does not know the device and places its
    /// own from slot 2 upwards; a second ptnet device in the same domain needs another slot.
    #[arg(long, value_name = "SLOT", default_value_t = 0x1f, value_parser = clap::value_parser!(u8).range(3..=0x1f))]
    pub pci_slot: u8,
}

/// `s` as an XML attribute value (between single quotes).
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `<memoryBacking>`: guest RAM in a shared memfd the daemon can map.
fn memory_backing(indent: &str) -> String {
    format!(
        "{indent}<memoryBacking>\n\
         {indent}  <source type='memfd'/>\n\
         {indent}  <access mode='shared'/>\n\
         {indent}</memoryBacking>\n"
    )
}

/// The device: an `<interface>` for virtio-net; for ptnet, `<qemu:commandline>` with
/// `qemu_args` (returned second: it belongs at the domain's top level, not in `<devices>`).
fn device(vm: &VmEntry, qemu_args: &[String], slot: u8, indent: &str) -> (String, String) {
    if on_ivshmem(vm) {
        // The daemon's arguments say how many vectors (`vectors=N`, rings + 1).
        let vectors = qemu_args
            .iter()
            .flat_map(|a| a.split(','))
            .find_map(|kv| kv.strip_prefix("vectors="))
            .unwrap_or("2");
        let name: String = std::path::Path::new(&vm.socket)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let x = format!(
            "{indent}<shmem name='ptnet-{}'>\n\
             {indent}  <model type='ivshmem-doorbell'/>\n\
             {indent}  <server path='{}'/>\n\
             {indent}  <msi vectors='{}' ioeventfd='on'/>\n\
             {indent}</shmem>\n",
            attr(&name),
            attr(&vm.socket),
            attr(vectors)
        );
        return (x, String::new());
    }
    match vm.device {
        VmDevice::VirtioNet => {
            let mut x = format!("{indent}<interface type='vhostuser'>\n");
            if let Some(mac) = &vm.mac {
                let _ = writeln!(x, "{indent}  <mac address='{}'/>", attr(mac));
            }
            let _ = write!(
                x,
                "{indent}  <source type='unix' path='{}' mode='client'>\n\
                 {indent}    <reconnect enabled='yes' timeout='1'/>\n\
                 {indent}  </source>\n\
                 {indent}  <model type='virtio'/>\n",
                attr(&vm.socket)
            );
            if vm.queue_pairs > 1 {
                let _ = writeln!(x, "{indent}  <driver queues='{}'/>", vm.queue_pairs);
            }
            let _ = writeln!(x, "{indent}</interface>");
            (x, String::new())
        }
        VmDevice::Ptnet => {
            let mut x = format!("{indent}<qemu:commandline>\n");
            let mut after_device = false;
            for a in qemu_args {
                // The device at a fixed slot: QEMU's first free one may be one libvirt
                // assigned to its own devices.
                let v = if after_device {
                    format!("{a},bus=pci.0,addr={slot:#04x}")
                } else {
                    a.clone()
                };
                after_device = a == "-device";
                let _ = writeln!(x, "{indent}  <qemu:arg value='{}'/>", attr(&v));
            }
            let _ = writeln!(x, "{indent}</qemu:commandline>");
            (String::new(), x)
        }
    }
}

/// Whether `vm` is a ptnet device on the ivshmem transport (any QEMU, no shared guest RAM).
fn on_ivshmem(vm: &VmEntry) -> bool {
    vm.device == VmDevice::Ptnet && vm.transport == VmTransport::Ivshmem
}

/// The pieces to add to an existing domain, each after a comment saying where.
pub fn fragments(port: &str, vm: &VmEntry, qemu_args: &[String], slot: u8) -> String {
    let (dev, cmdline) = device(vm, qemu_args, slot, "");
    if on_ivshmem(vm) {
        return format!(
            "<!-- {port}: a ptnet device on {} over ivshmem (ptnetctl libvirt-xml); any QEMU, \
             no shared guest RAM. -->\n<!-- In <devices>: -->\n{dev}",
            attr(&vm.socket)
        );
    }
    let mut x = format!(
        "<!-- {port}: a {} device on {} (ptnetctl libvirt-xml). -->\n\
         <!-- In <domain>: guest RAM shared with ptnetd. -->\n{}",
        vm.device,
        attr(&vm.socket),
        memory_backing("")
    );
    if vm.device == VmDevice::Ptnet {
        let _ = write!(
            x,
            "<!-- In <domain>, which must declare xmlns:qemu='{QEMU_NS}'; QEMU (<emulator>) must \
             be a build that carries the ptnet device. -->\n{cmdline}"
        );
    } else {
        let _ = write!(x, "<!-- In <devices>: -->\n{dev}");
    }
    x
}

/// A whole domain: `d` says how it boots, the port is its network device.
pub fn domain(vm: &VmEntry, qemu_args: &[String], d: &DomainArgs) -> String {
    let name = d.domain.as_deref().unwrap_or("ptnet-vm");
    let tcg = d.accel == "tcg";
    let ns = if vm.device == VmDevice::Ptnet && !on_ivshmem(vm) {
        format!(" xmlns:qemu='{QEMU_NS}'")
    } else {
        String::new()
    };
    let backing = if on_ivshmem(vm) {
        String::new()
    } else {
        memory_backing("  ")
    };
    let mut x = format!(
        "<domain type='{}'{ns}>\n  <name>{}</name>\n  <memory unit='MiB'>{}</memory>\n  \
         <vcpu>{}</vcpu>\n{}",
        if tcg { "qemu" } else { "kvm" },
        attr(name),
        d.memory,
        d.vcpus.max(1),
        backing
    );
    x.push_str("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
    if let Some(k) = &d.kernel {
        let _ = writeln!(x, "    <kernel>{}</kernel>", attr(&k.to_string_lossy()));
        if let Some(i) = &d.initrd {
            let _ = writeln!(x, "    <initrd>{}</initrd>", attr(&i.to_string_lossy()));
        }
        if let Some(c) = &d.cmdline {
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", attr(c));
        }
    } else {
        x.push_str("    <boot dev='hd'/>\n");
    }
    x.push_str("  </os>\n  <features>\n    <acpi/>\n  </features>\n");
    if tcg {
        x.push_str("  <cpu mode='custom' match='exact'>\n    <model fallback='allow'>qemu64</model>\n  </cpu>\n");
    } else {
        x.push_str("  <cpu mode='host-passthrough'/>\n");
    }
    x.push_str("  <devices>\n");
    if let Some(e) = &d.emulator {
        let _ = writeln!(x, "    <emulator>{}</emulator>", attr(&e.to_string_lossy()));
    }
    if let Some(disk) = &d.disk {
        let path = disk.to_string_lossy();
        let format = if path.ends_with(".qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        let _ = write!(
            x,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{format}'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
            attr(&path)
        );
    }
    match &d.serial_log {
        Some(p) => {
            let _ = write!(
                x,
                "    <serial type='file'>\n      <source path='{}'/>\n      <target port='0'/>\n    \
                 </serial>\n",
                attr(&p.to_string_lossy())
            );
        }
        None => x.push_str("    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n"),
    }
    let (dev, cmdline) = device(vm, qemu_args, d.pci_slot, "    ");
    x.push_str(&dev);
    x.push_str("  </devices>\n");
    // <qemu:commandline> must come after <devices> (libvirt's schema).
    if !cmdline.is_empty() {
        x.push_str(&device(vm, qemu_args, d.pci_slot, "  ").1);
    }
    x.push_str("</domain>\n");
    x
}

/// The port's VM entry from the daemon's listing, and a ptnet device's QEMU arguments.
fn ask(socket: &str, port: &str) -> Result<(VmEntry, Vec<String>), String> {
    let call = |r: Request| {
        proto::call(socket, r)
            .map(|(reply, _, _)| reply)
            .map_err(|e| {
                format!(
                    "cannot reach ptnetd at {socket}: {}",
                    proto::error_chain(&e)
                )
            })
    };
    let entry = match call(Request::List)? {
        Reply::Listing { switches, pipes } => switches
            .into_iter()
            .flat_map(|s| s.ports)
            .chain(pipes)
            .find(|p| p.name == port),
        Reply::Error { message } => return Err(message),
        _ => return Err("unexpected reply".into()),
    };
    let vm = entry
        .ok_or_else(|| format!("no port {port}"))?
        .vm
        .ok_or_else(|| format!("{port} is not served to a VM (serve-vm or serve-virtio-net it)"))?;
    let args = match vm.device {
        VmDevice::VirtioNet => Vec::new(),
        VmDevice::Ptnet => match call(Request::QemuArgs { port: port.into() })? {
            Reply::QemuArgs { args } => args,
            Reply::Error { message } => return Err(message),
            _ => return Err("unexpected reply".into()),
        },
    };
    Ok((vm, args))
}

/// `ptnetctl libvirt-xml`: prints the XML, or says why it cannot.
pub fn run(socket: &str, port: &str, d: &DomainArgs) -> ExitCode {
    match ask(socket, port) {
        Ok((vm, args)) => {
            match d.domain {
                Some(_) => print!("{}", domain(&vm, &args, d)),
                None => print!("{}", fragments(port, &vm, &args, d.pci_slot)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ptnetctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(device: VmDevice) -> VmEntry {
        VmEntry {
            socket: "/run/ptnetd/vm/vale0-a'b.sock".into(),
            device,
            mac: Some("02:00:00:00:00:01".into()),
            queue_pairs: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_ptnet_device_on_ivshmem_is_a_shmem_element_with_the_daemons_server() {
        let args = [
            "-chardev".to_owned(),
            "socket,id=p,path=/run/ptnetd/vm/vale0-a.sock".to_owned(),
            "-device".to_owned(),
            "ivshmem-doorbell,id=p,chardev=p,vectors=3".to_owned(),
        ];
        let v = VmEntry {
            socket: "/run/ptnetd/vm/vale0-a.sock".into(),
            device: VmDevice::Ptnet,
            transport: VmTransport::Ivshmem,
            ..Default::default()
        };
        let x = fragments("vale0:a", &v, &args, 0x1f);
        for want in [
            "<shmem name='ptnet-vale0-a'>",
            "<model type='ivshmem-doorbell'/>",
            "<server path='/run/ptnetd/vm/vale0-a.sock'/>",
            "<msi vectors='3' ioeventfd='on'/>",
        ] {
            assert!(x.contains(want), "{want} missing:\n{x}");
        }
        for not in ["qemu:commandline", "memoryBacking"] {
            assert!(!x.contains(not), "{not} in:\n{x}");
        }
        let d = DomainArgs {
            domain: Some("g".into()),
            memory: 256,
            vcpus: 1,
            accel: "tcg".into(),
            emulator: None,
            kernel: Some("/k".into()),
            initrd: None,
            cmdline: None,
            disk: None,
            serial_log: None,
            pci_slot: 0x1e,
        };
        let x = domain(&v, &args, &d);
        assert!(x.starts_with("<domain type='qemu'>"), "{x}");
        assert!(x.contains("    <shmem name='ptnet-vale0-a'>") && !x.contains("memoryBacking"));
    }

    #[test]
    fn a_virtio_net_port_is_a_vhostuser_interface_that_reconnects() {
        let x = fragments("vale0:a", &vm(VmDevice::VirtioNet), &[], 0x1f);
        for want in [
            "<source type='memfd'/>",
            "<access mode='shared'/>",
            "<interface type='vhostuser'>",
            "<mac address='02:00:00:00:00:01'/>",
            "path='/run/ptnetd/vm/vale0-a&apos;b.sock' mode='client'",
            "<reconnect enabled='yes' timeout='1'/>",
            "<model type='virtio'/>",
            "<driver queues='2'/>",
        ] {
            assert!(x.contains(want), "{want} missing:\n{x}");
        }
        assert!(!x.contains("qemu:commandline"));
    }

    #[test]
    fn a_ptnet_device_passes_its_qemu_arguments_in_a_namespaced_domain() {
        let args = [
            "-chardev".to_owned(),
            "socket,id=p,path=/x&y".to_owned(),
            "-device".to_owned(),
            "vhost-user-test-device-pci,id=p".to_owned(),
        ];
        let d = DomainArgs {
            domain: Some("g1".into()),
            memory: 256,
            vcpus: 1,
            accel: "tcg".into(),
            emulator: Some("/opt/qemu/bin/qemu-system-x86_64".into()),
            kernel: Some("/k".into()),
            initrd: Some("/i".into()),
            cmdline: Some("console=ttyS0".into()),
            disk: None,
            serial_log: Some("/tmp/c.log".into()),
            pci_slot: 0x1e,
        };
        let x = domain(&vm(VmDevice::Ptnet), &args, &d);
        for want in [
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
            "<name>g1</name>",
            "<memory unit='MiB'>256</memory>",
            "<kernel>/k</kernel>",
            "<model fallback='allow'>qemu64</model>",
            "<emulator>/opt/qemu/bin/qemu-system-x86_64</emulator>",
            "<source path='/tmp/c.log'/>",
            "<qemu:arg value='-chardev'/>",
            "<qemu:arg value='socket,id=p,path=/x&amp;y'/>",
            "<qemu:arg value='vhost-user-test-device-pci,id=p,bus=pci.0,addr=0x1e'/>",
        ] {
            assert!(x.contains(want), "{want} missing:\n{x}");
        }
        let devices_end = x.find("</devices>").unwrap();
        assert!(x.find("<qemu:commandline>").unwrap() > devices_end, "{x}");
        assert!(!x.contains("<interface"), "{x}");
    }
}
