//! Serving one port as a ptnet device: what the port must be (its geometry, a private region
//! for the untrusted profile), the options, the QEMU arguments; the socket, the connections
//! and the port's reclaiming are `ptnet-vhost-user`'s ([`vhu::serve`]).

use std::path::Path;
use std::sync::Arc;

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_proto::Profile;
use ptnet_spec::device::{PTNET_CONFIG_SIZE, VIRTIO_ID_PTNET};
use ptnet_vhost_user as vhu;
pub use vhu::default_mac;

use crate::config::DeviceConfig;
use crate::device::{Device, DeviceOptions, DeviceStats};

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The port cannot be a ptnet device.
    #[error("port {port} cannot be a ptnet device: {why}")]
    Port {
        /// Port name.
        port: String,
        /// Why.
        why: String,
    },
    /// The profile does not match the port's memory.
    #[error(
        "port {0} shares its memory region with other ports: serving it to a VM needs the \
         trusted profile"
    )]
    NotPrivate(String),
    /// The socket cannot be served.
    #[error(transparent)]
    Serve(#[from] vhu::ServeError),
}

/// How to serve a port.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// MAC address the guest sees (default: locally administered, derived from the port
    /// name).
    pub mac: Option<[u8; 6]>,
    /// Trust profile. *Untrusted* requires the port to have a region of its own (a VALE port
    /// created without a shared region); *trusted* accepts any port (a pipe end, a VALE port
    /// in its switch's shared region). The guest always sees exactly the port's region.
    pub profile: Profile,
    /// Sync loop mode.
    pub mode: Mode,
    /// Largest virtqueue a frontend may configure (a power of two; QEMU's default `vq_size`
    /// is 64).
    pub max_queue_size: u16,
    /// Permissions and group of the socket (e.g. 0o660 with a group QEMU runs in).
    pub access: vhu::Access,
    /// Measurement only (`tests/kick_path.rs`): kicks pass through vhost-user-backend's vring
    /// worker thread before they reach the sync loop.
    #[doc(hidden)]
    pub kicks_via_worker: bool,
    /// Tests only (`examples/ptnet-hostile-device.rs`): the geometry the guest reads is
    /// passed through this first.
    #[doc(hidden)]
    pub tamper: Option<fn(&mut ptnet_spec::device::PtnetConfig)>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            mac: None,
            profile: Profile::Untrusted,
            mode: Mode::default(),
            max_queue_size: 1024,
            access: vhu::Access::default(),
            kicks_via_worker: false,
            tamper: None,
        }
    }
}

/// The QEMU arguments that attach a VM to a served port (besides shared guest RAM:
/// `-object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem`).
/// `reconnect-ms` makes QEMU (patched: qemu-patches 0009) wait for the daemon at start and
/// connect again when a restarted daemon serves the socket; the driver then hands the new
/// daemon its CSB and takes the rings up again (SPEC §3.5).
pub fn qemu_args(socket: &Path, id: &str, port: &dyn SyncPort) -> Vec<String> {
    let ifc = port.interface();
    let nvqs = ifc.tx.len() + ifc.rx.len();
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={},reconnect-ms=1000", socket.display()),
        "-device".into(),
        format!(
            "vhost-user-test-device-pci,id={id},chardev={id},virtio-id={VIRTIO_ID_PTNET},\
             num_vqs={nvqs},config_size={PTNET_CONFIG_SIZE}"
        ),
    ]
}

/// A port being served as a ptnet device: [`ServeHandle::device`](vhu::ServeHandle::device)
/// is the current connection's [`Device`] (its config space, status and CSB addresses).
pub type ServeHandle = vhu::ServeHandle<Device>;

/// Serves `port` as a ptnet device on the vhost-user socket `socket` until the handle is
/// stopped or dropped. One frontend at a time; each connection gets a fresh device, and the
/// port is reclaimed (unbound, free for the next client) when the frontend disconnects.
pub fn serve(
    socket: &Path,
    port: Arc<dyn SyncPort>,
    cfg: ServeConfig,
) -> Result<ServeHandle, ServeError> {
    let name = port.name().to_owned();
    let bad = |why: String| ServeError::Port {
        port: name.clone(),
        why,
    };
    let dc = DeviceConfig::for_port(&*port, [0; 6]);
    dc.get()
        .validate_geometry()
        .map_err(|e| bad(e.to_string()))?;
    if !cfg.max_queue_size.is_power_of_two() {
        return Err(bad(format!(
            "virtqueue size {} is not a power of two",
            cfg.max_queue_size
        )));
    }
    let region = port.interface().region();
    if cfg.profile == Profile::Untrusted && region.layout().if_objtotal != 1 {
        return Err(ServeError::NotPrivate(name));
    }
    let opts = DeviceOptions {
        mac: cfg.mac.unwrap_or_else(|| default_mac(&name)),
        mode: cfg.mode,
        max_queue_size: cfg.max_queue_size,
        kicks_via_worker: cfg.kicks_via_worker,
        tamper: cfg.tamper,
    };
    let stats = Arc::new(DeviceStats::default());
    let h = vhu::serve::<Device>(socket, cfg.access, port, opts, stats)?;
    log::info!(
        "{}: serving {} as a ptnet device on {} ({:?})",
        name,
        region_kind(&cfg.profile),
        socket.display(),
        cfg.profile
    );
    Ok(h)
}

fn region_kind(p: &Profile) -> &'static str {
    match p {
        Profile::Untrusted => "a private region",
        Profile::Trusted => "a shared region",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use vhu::socket::ClaimError;

    #[test]
    fn a_socket_in_use_or_a_file_is_not_taken_over_but_a_stale_socket_is() {
        use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
        let sw = Switch::new("vale-srv");
        let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port("p", &VPortSpec::default()).unwrap(),
        });
        let dir = std::env::temp_dir().join(format!("ptnet-device-srv-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.sock");
        // A stale socket (its listener is gone) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let cfg = ServeConfig {
            access: vhu::Access {
                mode: Some(0o660),
                group: None,
            },
            ..Default::default()
        };
        let h = serve(&path, Arc::clone(&port), cfg.clone()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            serve(&path, Arc::clone(&port), cfg.clone()),
            Err(ServeError::Serve(vhu::ServeError::Socket(
                ClaimError::InUse(_)
            )))
        ));
        h.stop();
        assert!(!path.exists(), "the socket is removed at stop");
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            serve(&file, port, cfg),
            Err(ServeError::Serve(vhu::ServeError::Socket(
                ClaimError::PathTaken(_)
            )))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
