//! `ptnet-shmem-probe`: a throwaway vhost-user backend that exercises the shared-memory support
//! of the patched QEMU (qemu-patches/) without a guest driver.
//!
//! It plays a ptnet device (virtio id 63) just far enough for QEMU to realize it: it serves a
//! 64-byte config space with `GET_CONFIG`, describes one shared memory region with
//! `GET_SHMEM_CONFIG`, and owns a memfd filled with a known pattern. A test drives it through a
//! control socket, one command per connection, one reply line back:
//!
//! | command | what the probe sends QEMU |
//! |---|---|
//! | `map SHMID FD_OFFSET SHM_OFFSET LEN FLAGS` | `SHMEM_MAP` of the memfd |
//! | `unmap SHMID SHM_OFFSET LEN` | `SHMEM_UNMAP` |
//! | `config-change` | `CONFIG_CHANGE_MSG` |
//! | `stats` | nothing: reports GET_CONFIG/SET_CONFIG counts and the last SET_CONFIG |
//!
//! Numbers are decimal or `0x` hex. The reply is `ok ...` or `err ...`. Word `i` (u64, little
//! endian) of the memfd holds `PATTERN_BASE + i`, so any offset can be checked from the QEMU
//! monitor with `xp`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::{env, process, thread};

use vhost::vhost_user::message::BackendReq;
use vhost::vhost_user::message::{
    VhostUserMMap, VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// The ptnet virtio device id (unofficial, see ptnet-spec).
const VIRTIO_ID_PTNET: u16 = 63;
/// Size of the ptnet device config space.
const CONFIG_SIZE: usize = 64;
/// Size of shared memory region 0 as announced with GET_SHMEM_CONFIG.
const REGION_SIZE: u64 = 8 << 20;
/// Size of the memfd the probe maps into the region.
const MEMFD_SIZE: u64 = 4 << 20;
/// Word `i` of the memfd holds `PATTERN_BASE + i` ("PTNE" in the high bytes).
const PATTERN_BASE: u64 = 0x5054_4e45_0000_0000;
/// VIRTIO_F_VERSION_1.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What QEMU did with the config space, for `stats`.
#[derive(Default)]
struct ConfigLog {
    get_config: u64,
    set_config: u64,
    last_set: Option<(u32, Vec<u8>)>,
}

/// The GET_SHMEM_CONFIG answer. `PROBE_SHMEM_SIZES=a,b,..` (region sizes by shmid) and
/// `PROBE_SHMEM_NREGIONS=n` override the default of one REGION_SIZE region, so that tests can
/// play a backend that asks for something odd.
struct ShmemConfig {
    nregions: u32,
    sizes: Vec<u64>,
}

impl ShmemConfig {
    fn from_env() -> Result<Self, String> {
        let sizes = match env::var("PROBE_SHMEM_SIZES") {
            Ok(list) => list
                .split(',')
                .map(|w| parse_u64(Some(w)))
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => vec![REGION_SIZE],
        };
        let nregions = match env::var("PROBE_SHMEM_NREGIONS") {
            Ok(n) => u32::try_from(parse_u64(Some(&n))?).map_err(|e| e.to_string())?,
            Err(_) => sizes.len() as u32,
        };
        Ok(ShmemConfig { nregions, sizes })
    }
}

struct Probe {
    config: [u8; CONFIG_SIZE],
    shmem: ShmemConfig,
    log: Arc<Mutex<ConfigLog>>,
    backend_req: Arc<Mutex<Option<Backend>>>,
}

impl Probe {
    fn new(
        shmem: ShmemConfig,
        log: Arc<Mutex<ConfigLog>>,
        backend_req: Arc<Mutex<Option<Backend>>>,
    ) -> Self {
        // A plausible ptnet config: MAC, 1 TX + 1 RX ring of 256 slots, mem_size, buf_size.
        let mut config = [0u8; CONFIG_SIZE];
        config[0..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        config[8..12].copy_from_slice(&1u32.to_le_bytes());
        config[12..16].copy_from_slice(&1u32.to_le_bytes());
        config[16..20].copy_from_slice(&256u32.to_le_bytes());
        config[20..24].copy_from_slice(&256u32.to_le_bytes());
        config[32..40].copy_from_slice(&MEMFD_SIZE.to_le_bytes());
        config[44..48].copy_from_slice(&2048u32.to_le_bytes());
        Probe {
            config,
            shmem,
            log,
            backend_req,
        }
    }
}

impl VhostUserBackendMut for Probe {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::BACKEND_SEND_FD
            | VhostUserProtocolFeatures::SHMEM
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.log.lock().unwrap().get_config += 1;
        let start = offset as usize;
        match start.checked_add(size as usize) {
            Some(end) if end <= CONFIG_SIZE => self.config[start..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= CONFIG_SIZE)
            .ok_or_else(|| io::Error::other("SET_CONFIG outside the config space"))?;
        // The driver may only write the two CSB addresses (offsets 48..64).
        for (i, byte) in (start..end).zip(buf) {
            if i >= 48 {
                self.config[i] = *byte;
            }
        }
        let mut log = self.log.lock().unwrap();
        log.set_config += 1;
        log.last_set = Some((offset, buf.to_vec()));
        Ok(())
    }

    fn update_memory(&mut self, _mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        Ok(())
    }

    fn set_backend_req_fd(&mut self, backend: Backend) {
        *self.backend_req.lock().unwrap() = Some(backend);
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        Ok(VhostUserShMemConfig::new(
            self.shmem.nregions,
            &self.shmem.sizes,
        ))
    }

    fn handle_event(
        &mut self,
        _device_event: u16,
        _evset: EventSet,
        _vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// A memfd of MEMFD_SIZE bytes filled with the pattern.
fn pattern_memfd() -> io::Result<File> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"ptnet-shmem-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let bytes: Vec<u8> = (0..MEMFD_SIZE / 8)
        .flat_map(|i| (PATTERN_BASE + i).to_le_bytes())
        .collect();
    file.write_all(&bytes)?;
    Ok(file)
}

fn parse_u64(word: Option<&str>) -> Result<u64, String> {
    let word = word.ok_or("missing argument")?;
    let parsed = match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.map_err(|e| format!("bad number {word:?}: {e}"))
}

fn run_command(
    line: &str,
    backend_req: &Mutex<Option<Backend>>,
    memfd: &File,
    log: &Mutex<ConfigLog>,
) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("");
    if command == "stats" {
        let log = log.lock().unwrap();
        let last = match &log.last_set {
            Some((offset, bytes)) => format!("{offset}:{}", hex(bytes)),
            None => "none".to_string(),
        };
        return Ok(format!(
            "get_config={} set_config={} last_set={last}",
            log.get_config, log.set_config
        ));
    }
    let guard = backend_req.lock().unwrap();
    let backend = guard.as_ref().ok_or("no backend channel yet")?;
    let result = match command {
        "map" => {
            let msg = VhostUserMMap {
                shmid: u8::try_from(parse_u64(words.next())?).map_err(|e| e.to_string())?,
                fd_offset: parse_u64(words.next())?,
                shm_offset: parse_u64(words.next())?,
                len: parse_u64(words.next())?,
                flags: parse_u64(words.next())?,
                ..Default::default()
            };
            backend.shmem_map(&msg, memfd)
        }
        "unmap" => {
            let msg = VhostUserMMap {
                shmid: u8::try_from(parse_u64(words.next())?).map_err(|e| e.to_string())?,
                shm_offset: parse_u64(words.next())?,
                len: parse_u64(words.next())?,
                ..Default::default()
            };
            backend.shmem_unmap(&msg)
        }
        // vhost 0.18's Backend does not implement handle_config_change (ENOSYS), so the
        // probe writes that message on the backend channel itself.
        "config-change" => send_config_change(),
        _ => return Err(format!("unknown command {command:?}")),
    };
    match result {
        Ok(value) => Ok(format!("{command} acked {value}")),
        Err(e) => Err(format!("{command} refused: {e}")),
    }
}

/// The backend channel: the one connected Unix socket of this process without a name (QEMU
/// created it with socketpair(); the vhost-user and control connections carry their listener's
/// path). Found through /proc because vhost's `Backend` keeps its socket private.
fn backend_channel_fd() -> io::Result<RawFd> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: sockaddr_un is plain data; the lengths describe its size; fstat/getsockname
        // only fail on descriptors that are not sockets or are gone.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                continue;
            }
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut len) == 0
                && len as usize > std::mem::size_of::<libc::sa_family_t>();
            let mut peer: libc::sockaddr_un = std::mem::zeroed();
            let mut peer_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let connected = libc::getpeername(fd, (&raw mut peer).cast(), &mut peer_len) == 0;
            if addr.sun_family as i32 == libc::AF_UNIX && !named && connected {
                found.push(fd);
            }
        }
    }
    match found[..] {
        [fd] => Ok(fd),
        _ => Err(io::Error::other(format!(
            "backend channel not found: {found:?}"
        ))),
    }
}

/// Sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG with NEED_REPLY and returns QEMU's u64 reply.
/// The caller holds the backend channel lock, so nothing else talks on the socket meanwhile.
fn send_config_change() -> io::Result<u64> {
    let fd = backend_channel_fd()?;
    // SAFETY: fd stays open while the Backend (kept alive by the caller's lock) owns it; the
    // File is forgotten below instead of closing it.
    let mut sock = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let code: u32 = BackendReq::CONFIG_CHANGE_MSG.into();
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(&code.to_le_bytes());
    header.extend_from_slice(&(0x1u32 | 0x8).to_le_bytes()); // version 1, NEED_REPLY
    header.extend_from_slice(&0u32.to_le_bytes());
    sock.write_all(&header)?;
    let mut reply = [0u8; 20];
    io::Read::read_exact(&mut *sock, &mut reply)?;
    let value = u64::from_le_bytes(reply[12..20].try_into().unwrap());
    if value != 0 {
        return Err(io::Error::other(format!("frontend replied {value}")));
    }
    Ok(value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve_control(
    listener: UnixListener,
    backend_req: Arc<Mutex<Option<Backend>>>,
    memfd: File,
    log: Arc<Mutex<ConfigLog>>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let reply = match run_command(line.trim(), &backend_req, &memfd, &log) {
            Ok(text) => format!("ok {text}\n"),
            Err(text) => format!("err {text}\n"),
        };
        eprintln!("probe: {} -> {}", line.trim(), reply.trim());
        let _ = (&stream).write_all(reply.as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} VHOST_USER_SOCKET CONTROL_SOCKET", args[0]);
        process::exit(2);
    }
    let (socket, control) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    if let Err(e) = run(&socket, &control) {
        eprintln!("probe: {e}");
        process::exit(1);
    }
}

fn run(socket: &PathBuf, control: &PathBuf) -> io::Result<()> {
    let shmem = ShmemConfig::from_env().map_err(io::Error::other)?;
    let memfd = pattern_memfd()?;
    let log = Arc::new(Mutex::new(ConfigLog::default()));
    let backend_req = Arc::new(Mutex::new(None));

    let _ = std::fs::remove_file(control);
    let listener = UnixListener::bind(control)?;
    {
        let (backend_req, log) = (backend_req.clone(), log.clone());
        thread::Builder::new()
            .name("control".into())
            .spawn(move || serve_control(listener, backend_req, memfd, log))?;
    }

    let probe = Arc::new(RwLock::new(Probe::new(shmem, log, backend_req)));
    let mut daemon = VhostUserDaemon::new(
        format!("ptnet-shmem-probe (virtio id {VIRTIO_ID_PTNET})"),
        probe,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| io::Error::other(format!("daemon: {e:?}")))?;
    eprintln!("probe: listening on {}", socket.display());
    // One frontend connection; returns when QEMU goes away.
    daemon
        .serve(socket)
        .map_err(|e| io::Error::other(format!("serve: {e:?}")))?;
    eprintln!("probe: frontend disconnected");
    Ok(())
}
