//! `ptnetctl`: the command-line front of [`ptnetctl`]'s library; one request per command.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ptnet_proto as proto;
use ptnetctl::cli::{Args, Cmd, View};
use ptnetctl::show::show;
use ptnetctl::{libvirt, top};

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
        Cmd::LibvirtXml { port, domain } => return libvirt::run(&socket, &port, &domain),
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
