//! `ptnet-vm`: boot a ptnet guest by hand and watch its console.
//!
//! ```text
//! ptnet-vm --kernel "$(vm-images/build-kernel.sh)" --script test.sh --module hello.ko
//! ptnet-vm --kernel bzImage --initrd initrd.gz --accel kvm
//! ```
//!
//! Exits with the guest test script's status, 124 when the guest timed out, 125 when the
//! guest reported no status or the run failed.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ptnet_vmtest::{Accel, Initramfs, ScratchDir, Vm, VmConfig};

/// Boot a ptnet guest under QEMU (TCG by default) and print its console.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Kernel image, or a kernel build directory (as printed by vm-images/build-kernel.sh).
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs to boot; without it, one is built from --script and friends.
    #[arg(long, conflicts_with_all = ["script", "module", "bin", "file"])]
    initrd: Option<PathBuf>,
    /// Test script for a built initramfs (run with `sh -e`); default: an interactive-less
    /// smoke script that prints the kernel version and the loaded modules.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Kernel module to put in /modules/ of the built initramfs (repeatable).
    #[arg(long)]
    module: Vec<PathBuf>,
    /// Static binary to put in /bin/ of the built initramfs (repeatable).
    #[arg(long)]
    bin: Vec<PathBuf>,
    /// SRC:DEST file to put into the built initramfs (repeatable).
    #[arg(long)]
    file: Vec<String>,
    /// Accelerator: tcg or kvm (default: $PTNET_ACCEL, else tcg).
    #[arg(long)]
    accel: Option<Accel>,
    /// QEMU binary (default: $PTNET_QEMU, else qemu-system-x86_64).
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Back guest RAM with a shared memfd (for vhost-user devices).
    #[arg(long)]
    shared_memory: bool,
    /// Extra kernel command-line word (repeatable).
    #[arg(long)]
    append: Vec<String>,
    /// Extra QEMU argument (repeatable; use --qemu-arg=-device for values with a dash).
    #[arg(long, allow_hyphen_values = true)]
    qemu_arg: Vec<String>,
    /// Console log file (default: a file in a scratch directory that is kept).
    #[arg(long)]
    console_log: Option<PathBuf>,
    /// Seconds before the guest is killed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Do not copy the console to stdout.
    #[arg(long, short)]
    quiet: bool,
}

const SMOKE_SCRIPT: &str = "uname -a\ncat /proc/cmdline\nls /modules /bin | head -n 5\n";

/// One run, as the command line asks for it.
struct Plan {
    /// The guest; its `initrd` is the image below once built.
    config: VmConfig,
    /// An initramfs to build first, when no --initrd was given.
    image: Option<Initramfs>,
    /// Holds the built image and, by default, the console log.
    scratch: ScratchDir,
    /// The console log lives in `scratch`, which is then kept for reading.
    log_in_scratch: bool,
    quiet: bool,
}

impl TryFrom<Args> for Plan {
    type Error = Box<dyn std::error::Error>;

    fn try_from(args: Args) -> Result<Self, Self::Error> {
        let kernel = if args.kernel.is_dir() {
            args.kernel.join("arch/x86/boot/bzImage")
        } else {
            args.kernel
        };
        let scratch = ScratchDir::new("vm")?;
        let image = match args.initrd {
            Some(_) => None,
            None => {
                let mut image = match &args.script {
                    Some(script) => Initramfs::from_script_file(script),
                    None => Initramfs::new(SMOKE_SCRIPT),
                };
                for m in args.module {
                    image = image.module(m);
                }
                for b in args.bin {
                    image = image.bin(b);
                }
                for f in &args.file {
                    let (src, dest) = f
                        .split_once(':')
                        .ok_or_else(|| format!("--file wants SRC:DEST, got {f:?}"))?;
                    image = image.file(src, dest);
                }
                Some(image)
            }
        };
        let initrd = args
            .initrd
            .unwrap_or_else(|| scratch.path().join("initrd.gz"));
        let log_in_scratch = args.console_log.is_none();
        let console_log = args
            .console_log
            .unwrap_or_else(|| scratch.path().join("console.log"));

        let mut config = VmConfig::new("ptnet-vm", kernel, initrd, console_log)?
            .cpus(args.cpus)
            .memory_mib(args.memory)
            .qemu_args(args.qemu_arg)
            .timeout(Duration::from_secs(args.timeout));
        config.cmdline.extend(args.append);
        if let Some(accel) = args.accel {
            config.accel = accel;
        }
        if let Some(qemu) = args.qemu {
            config.qemu = qemu;
        }
        if args.shared_memory {
            config = config.shared_memory();
        }
        Ok(Self {
            config,
            image,
            scratch,
            log_in_scratch,
            quiet: args.quiet,
        })
    }
}

fn run(plan: Plan) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(image) = &plan.image {
        image.build(&plan.config.initrd)?;
    }
    let vm = Vm::start(plan.config)?;
    let outcome = if plan.quiet {
        vm.wait()?
    } else {
        vm.wait_echo(&mut io::stdout())?
    };
    if plan.log_in_scratch {
        let dir = plan.scratch.keep();
        log::info!("console log kept in {}", dir.join("console.log").display());
    }
    eprintln!(
        "ptnet-vm: {} after {:.1} s",
        match (outcome.timed_out, outcome.exit_status) {
            (true, _) => "timed out".to_owned(),
            (false, Some(s)) => format!("guest exited with status {s}"),
            (false, None) => format!("no PTNET-EXIT status, QEMU {}", outcome.qemu_status),
        },
        outcome.elapsed.as_secs_f64()
    );
    if !outcome.qemu_stderr.trim().is_empty() {
        eprintln!("QEMU stderr:\n{}", outcome.qemu_stderr.trim_end());
    }
    Ok(match (outcome.timed_out, outcome.exit_status) {
        (true, _) => ExitCode::from(124),
        (false, Some(s)) => ExitCode::from(u8::try_from(s).unwrap_or(125)),
        (false, None) => ExitCode::from(125),
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Plan::try_from(Args::parse()).and_then(run) {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("ptnet-vm: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(125)
        }
    }
}
