//! `ptnet-mangen DIR`: writes the section-8 man pages of `ptnetd`, `ptnetctl` and
//! `ptnet-pktgen` into DIR, one page per program and one per subcommand
//! (`ptnetctl-serve-vm.8`, as git and cargo do), from the same clap definitions the programs
//! parse with, so a page cannot drift from the program. `ptnetd.toml(5)` is written by hand
//! (`packaging/man/ptnetd.toml.5`): a file format has no command line to generate it from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};

/// Writes `cmd`'s page and, recursively, one per subcommand (but `help`) into `dir`;
/// returns the files written.
fn write_pages(cmd: &Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(&path, page)?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, dir, out)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: ptnet-mangen DIR");
        return ExitCode::from(2);
    };
    let programs = [
        ptnetd::cli::Args::command(),
        ptnetctl::cli::Args::command(),
        ptnet_pktgen::cli::Args::command(),
    ];
    let mut written = Vec::new();
    let result = std::fs::create_dir_all(&dir).and_then(|()| {
        programs.into_iter().try_for_each(|mut cmd| {
            // Built, so subcommands carry their display names (`ptnetctl-serve-vm`).
            cmd.build();
            write_pages(&cmd, &dir, &mut written)
        })
    });
    match result {
        Ok(()) => {
            for p in written {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ptnet-mangen: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_and_subcommand_gets_a_page_naming_its_options() {
        let dir = std::env::temp_dir().join(format!("ptnet-mangen-{}", std::process::id()));
        let mut cmd = ptnetctl::cli::Args::command();
        cmd.build();
        let mut written = Vec::new();
        std::fs::create_dir_all(&dir).unwrap();
        write_pages(&cmd, &dir, &mut written).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("ptnetctl-{}.8", sub.get_name());
            assert!(names.contains(&page), "{page} missing from {names:?}");
        }
        let serve = std::fs::read_to_string(dir.join("ptnetctl-serve-vm.8")).unwrap();
        assert!(serve.contains(".TH ptnetctl-serve-vm 8"), "{serve}");
        assert!(serve.contains("trusted"), "{serve}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
