//! Every form of netmap's port-name grammar, and the errors for malformed names.

use ptnet_spec::name::{Base, NameError, Pipe, PipeRole, PortKey, PortName, RingSelection};
use ptnet_spec::netmap::*;

fn parse(s: &str) -> PortName<'_> {
    PortName::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn err(s: &str) -> NameError {
    PortName::parse(s).expect_err(s)
}

#[test]
fn vale_port_names_switch_and_port() {
    let n = parse("vale0:vm1");
    assert_eq!(
        n.base,
        Base::Vale {
            switch: "vale0",
            port: "vm1"
        }
    );
    assert_eq!(n.rings, RingSelection::AllNic);
    assert_eq!((n.flags, n.mem_id, n.pipe), (0, None, None));
    assert!(n.is_vale());
}

#[test]
fn netmap_prefix_names_an_interface() {
    assert_eq!(parse("netmap:eth0").base, Base::Nic { ifname: "eth0" });
    assert_eq!(parse("eth0.100").base, Base::Nic { ifname: "eth0.100" });
    // With the prefix, even a name starting with "vale" is an interface.
    assert_eq!(
        parse("netmap:valexyz").base,
        Base::Nic { ifname: "valexyz" }
    );
}

#[test]
fn pipe_ends_are_master_and_slave() {
    let m = parse("vale0:a{1");
    assert_eq!(
        m.pipe,
        Some(Pipe {
            role: PipeRole::Master,
            id: "1"
        })
    );
    let s = parse("netmap:pipe0}blue");
    assert_eq!(s.base, Base::Nic { ifname: "pipe0" });
    assert_eq!(
        s.pipe,
        Some(Pipe {
            role: PipeRole::Slave,
            id: "blue"
        })
    );
}

#[test]
fn ring_suffixes_select_rings() {
    assert_eq!(parse("netmap:eth0^").rings, RingSelection::Sw);
    assert_eq!(parse("netmap:eth0^2").rings, RingSelection::OneSw(2));
    assert_eq!(parse("netmap:eth0*").rings, RingSelection::NicSw);
    assert_eq!(parse("netmap:eth0-3").rings, RingSelection::OneNic(3));
    assert_eq!(RingSelection::OneNic(3).nr_mode(), (NR_REG_ONE_NIC, 3));
    assert_eq!(RingSelection::AllNic.nr_mode(), (NR_REG_ALL_NIC, 0));
}

#[test]
fn flags_and_memid_in_either_order() {
    let a = parse("vale1:p/xR@7");
    assert_eq!(a.flags, NR_EXCLUSIVE | NR_RX_RINGS_ONLY);
    assert_eq!(a.mem_id, Some(7));
    let b = parse("vale1:p@7/xR");
    assert_eq!((b.flags, b.mem_id), (a.flags, a.mem_id));
    let c = parse("netmap:eth0-1/ztrT");
    assert_eq!(
        c.flags,
        NR_ZCOPY_MON | NR_MONITOR_TX | NR_MONITOR_RX | NR_TX_RINGS_ONLY
    );
}

#[test]
fn display_round_trips_and_key_drops_suffixes() {
    for s in [
        "vale0:vm1",
        "vale2:a{3/x@4",
        "netmap:eth0^1",
        "netmap:eth0*/R",
        "netmap:p}9",
    ] {
        let n = parse(s);
        assert_eq!(n.to_string(), s);
        assert_eq!(PortName::parse(&n.to_string()).unwrap(), n);
    }
    assert_eq!(PortKey(&parse("vale2:a{3/x@4")).to_string(), "vale2:a{3");
    assert_eq!(PortKey(&parse("netmap:eth0^1")).to_string(), "eth0");
}

#[test]
fn malformed_names_are_rejected_with_a_reason() {
    assert_eq!(err(""), NameError::Empty);
    assert_eq!(err("netmap:"), NameError::Empty);
    assert_eq!(err("vale0"), NameError::ValeWithoutColon);
    assert_eq!(err("vale0:"), NameError::EmptyComponent { what: "port" });
    assert_eq!(
        err("vale0:a.b"),
        NameError::BadChar {
            what: "port",
            ch: '.'
        }
    );
    assert_eq!(
        err("vale0:abcdefghijklmnop"),
        NameError::ComponentTooLong {
            what: "port",
            len: 16
        }
    );
    assert_eq!(err("eth0-"), NameError::MissingNumber { after: '-' });
    assert_eq!(err("eth0-4095"), NameError::RingOutOfRange { ring: 4095 });
    assert_eq!(
        err("eth0-99999999999"),
        NameError::RingOutOfRange { ring: u32::MAX }
    );
    assert_eq!(err("eth0@0"), NameError::BadMemId { mem_id: 0 });
    assert_eq!(err("eth0@70000"), NameError::BadMemId { mem_id: 70000 });
    assert_eq!(err("eth0@1@2"), NameError::Duplicate { what: "@memid" });
    assert_eq!(err("eth0/x/x"), NameError::Duplicate { what: "/flags" });
    assert_eq!(err("eth0/q"), NameError::UnknownFlag { ch: 'q' });
    assert_eq!(err("eth0^1*"), NameError::UnexpectedChar { ch: '*' });
    assert_eq!(err("eth0{"), NameError::EmptyComponent { what: "pipe" });
    assert_eq!(
        err("eth 0"),
        NameError::BadChar {
            what: "interface",
            ch: ' '
        }
    );
    assert!(matches!(
        err(&"x".repeat(64)),
        NameError::TooLong { len: 64 }
    ));
    // Every error has a message.
    assert!(!err("vale0").to_string().is_empty());
}
