//! netmap port names: `valeX:Y`, `netmap:ifname` (or a bare `ifname`), pipe ends `X{N` /
//! `X}N`, and the suffixes `^`, `^N`, `*`, `-N`, `/flags` and `@N` (netmap's `nm_open`
//! grammar).
//!
//! ```text
//! name   := base [ pipe | rings ] { '/' flags | '@' memid }    (each of the last two at most once)
//! base   := 'vale' word ':' word  |  'netmap:' ifname  |  ifname
//! pipe   := '{' word  |  '}' word         master / slave end of pipe `word` on `base`
//! rings  := '^' | '^' N | '*' | '-' N     host rings, one host ring, NIC+host, one NIC ring
//! flags  := one or more of x z t r R T    exclusive, zero-copy monitor, TX/RX monitor, RX/TX only
//! word   := [0-9A-Za-z_]+
//! ```

use core::fmt;

use crate::netmap::{
    NETMAP_REQ_IFNAMSIZ, NETMAP_RING_MASK, NR_EXCLUSIVE, NR_MONITOR_RX, NR_MONITOR_TX,
    NR_REG_ALL_NIC, NR_REG_NIC_SW, NR_REG_ONE_NIC, NR_REG_ONE_SW, NR_REG_SW, NR_RX_RINGS_ONLY,
    NR_TX_RINGS_ONLY, NR_ZCOPY_MON,
};

/// Longest switch, port or interface name component (IFNAMSIZ - 1).
pub const MAX_COMPONENT_LEN: usize = 15;

/// The object a name designates, before any ring selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base<'a> {
    /// Port `port` of VALE switch `switch` (the switch name includes the `vale` prefix).
    Vale {
        /// Switch name, e.g. `vale0`.
        switch: &'a str,
        /// Port name on that switch.
        port: &'a str,
    },
    /// A host interface (`netmap:eth0` or `eth0`), or a stand-alone pipe parent.
    Nic {
        /// Interface name.
        ifname: &'a str,
    },
}

/// Which end of a netmap pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeRole {
    /// `X{N`.
    Master,
    /// `X}N`.
    Slave,
}

/// A pipe end on a parent port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipe<'a> {
    /// Master or slave.
    pub role: PipeRole,
    /// Pipe identifier, shared by both ends.
    pub id: &'a str,
}

/// Which rings of the port are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSelection {
    /// All NIC rings (no suffix).
    AllNic,
    /// NIC and host rings (`*`).
    NicSw,
    /// All host rings (`^`).
    Sw,
    /// One host ring pair (`^N`).
    OneSw(u16),
    /// One NIC ring pair (`-N`).
    OneNic(u16),
}

impl RingSelection {
    /// The `nr_mode` and `nr_ringid` of a NETMAP_REQ_REGISTER for this selection.
    pub const fn nr_mode(self) -> (u32, u16) {
        match self {
            RingSelection::AllNic => (NR_REG_ALL_NIC, 0),
            RingSelection::NicSw => (NR_REG_NIC_SW, 0),
            RingSelection::Sw => (NR_REG_SW, 0),
            RingSelection::OneSw(n) => (NR_REG_ONE_SW, n),
            RingSelection::OneNic(n) => (NR_REG_ONE_NIC, n),
        }
    }
}

/// A parsed port name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortName<'a> {
    /// The switch port or interface.
    pub base: Base<'a>,
    /// Set for `X{N` / `X}N`.
    pub pipe: Option<Pipe<'a>>,
    /// Ring selection suffix.
    pub rings: RingSelection,
    /// NR_* flags from the `/flags` suffix.
    pub flags: u64,
    /// Allocator requested with `@N`.
    pub mem_id: Option<u16>,
}

/// Why a port name was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name does not fit `nr_name` (63 bytes).
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A VALE name without the `:` between switch and port.
    ValeWithoutColon,
    /// A switch, port, interface or pipe name is empty.
    EmptyComponent {
        /// Which one.
        what: &'static str,
    },
    /// A component is longer than 15 bytes.
    ComponentTooLong {
        /// Which one.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A character not allowed in that component.
    BadChar {
        /// Which component.
        what: &'static str,
        /// The character.
        ch: char,
    },
    /// A suffix character that starts nothing (`-*^{}/@` are the valid ones).
    UnexpectedChar {
        /// The character.
        ch: char,
    },
    /// A number was expected after `-`, `^` or `@`.
    MissingNumber {
        /// The suffix character.
        after: char,
    },
    /// A ring number is not below NETMAP_RING_MASK.
    RingOutOfRange {
        /// The number as written (saturated).
        ring: u32,
    },
    /// `@N` with N = 0 or above 65535.
    BadMemId {
        /// The number as written (saturated).
        mem_id: u32,
    },
    /// `/` with an unknown flag letter.
    UnknownFlag {
        /// The letter.
        ch: char,
    },
    /// `/flags` or `@N` given twice.
    Duplicate {
        /// Which suffix.
        what: &'static str,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => write!(f, "empty port name"),
            NameError::TooLong { len } => write!(
                f,
                "port name is {len} bytes, at most {} fit",
                NETMAP_REQ_IFNAMSIZ - 1
            ),
            NameError::ValeWithoutColon => {
                write!(f, "VALE port names are 'valeSWITCH:PORT' (missing ':')")
            }
            NameError::EmptyComponent { what } => write!(f, "empty {what} name"),
            NameError::ComponentTooLong { what, len } => {
                write!(f, "{what} name is {len} bytes, at most {MAX_COMPONENT_LEN}")
            }
            NameError::BadChar { what, ch } => {
                write!(f, "character {ch:?} not allowed in {what} name")
            }
            NameError::UnexpectedChar { ch } => write!(f, "unexpected {ch:?} in port name suffix"),
            NameError::MissingNumber { after } => write!(f, "a number must follow {after:?}"),
            NameError::RingOutOfRange { ring } => {
                write!(f, "ring {ring} out of range [0, {NETMAP_RING_MASK})")
            }
            NameError::BadMemId { mem_id } => write!(f, "memory id {mem_id} not in 1..=65535"),
            NameError::UnknownFlag { ch } => {
                write!(f, "unknown flag {ch:?} (known: x z t r R T)")
            }
            NameError::Duplicate { what } => write!(f, "{what} given twice"),
        }
    }
}

const SUFFIX_CHARS: &[u8] = b"-*^{}/@";

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn check_word(s: &str, what: &'static str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::EmptyComponent { what });
    }
    if s.len() > MAX_COMPONENT_LEN {
        return Err(NameError::ComponentTooLong { what, len: s.len() });
    }
    match s.chars().find(|c| !c.is_ascii() || !is_word_byte(*c as u8)) {
        Some(ch) => Err(NameError::BadChar { what, ch }),
        None => Ok(()),
    }
}

fn check_ifname(s: &str) -> Result<(), NameError> {
    let what = "interface";
    if s.is_empty() {
        return Err(NameError::EmptyComponent { what });
    }
    if s.len() > MAX_COMPONENT_LEN {
        return Err(NameError::ComponentTooLong { what, len: s.len() });
    }
    match s
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, ':' | '/' | '%'))
    {
        Some(ch) => Err(NameError::BadChar { what, ch }),
        None => Ok(()),
    }
}

/// Splits a leading decimal number off `s`; saturates instead of overflowing.
fn take_number(s: &str) -> Option<(u32, &str)> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let mut v: u32 = 0;
    for b in s.as_bytes().iter().take(end) {
        v = v.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    Some((v, s.split_at(end).1))
}

fn take_word(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !is_word_byte(b)).unwrap_or(s.len());
    s.split_at(end)
}

fn ring_number(v: u32) -> Result<u16, NameError> {
    if v >= u32::from(NETMAP_RING_MASK) {
        return Err(NameError::RingOutOfRange { ring: v });
    }
    // PANIC: v < 0x0fff fits u16.
    Ok(v as u16)
}

impl<'a> PortName<'a> {
    /// Parses a port name.
    pub fn parse(name: &'a str) -> Result<Self, NameError> {
        let body = name.strip_prefix("netmap:").unwrap_or(name);
        if body.is_empty() {
            return Err(NameError::Empty);
        }
        if body.len() >= NETMAP_REQ_IFNAMSIZ as usize {
            return Err(NameError::TooLong { len: body.len() });
        }
        let split = body
            .bytes()
            .position(|b| SUFFIX_CHARS.contains(&b))
            .unwrap_or(body.len());
        let (base_str, mut rest) = body.split_at(split);

        let base = if base_str.starts_with("vale") && !name.starts_with("netmap:") {
            let (switch, port) = base_str
                .split_once(':')
                .ok_or(NameError::ValeWithoutColon)?;
            check_word(switch, "switch")?;
            check_word(port, "port")?;
            Base::Vale { switch, port }
        } else {
            check_ifname(base_str)?;
            Base::Nic { ifname: base_str }
        };

        let mut pipe = None;
        let mut rings = RingSelection::AllNic;
        if let Some(c) = rest.chars().next() {
            match c {
                '{' | '}' => {
                    let (id, r) = take_word(rest.split_at(1).1);
                    check_word(id, "pipe")?;
                    let role = if c == '{' {
                        PipeRole::Master
                    } else {
                        PipeRole::Slave
                    };
                    pipe = Some(Pipe { role, id });
                    rest = r;
                }
                '*' => {
                    rings = RingSelection::NicSw;
                    rest = rest.split_at(1).1;
                }
                '^' => {
                    rest = rest.split_at(1).1;
                    rings = match take_number(rest) {
                        Some((v, r)) => {
                            rest = r;
                            RingSelection::OneSw(ring_number(v)?)
                        }
                        None => RingSelection::Sw,
                    };
                }
                '-' => {
                    let (v, r) = take_number(rest.split_at(1).1)
                        .ok_or(NameError::MissingNumber { after: '-' })?;
                    rings = RingSelection::OneNic(ring_number(v)?);
                    rest = r;
                }
                _ => {}
            }
        }

        let mut flags = None;
        let mut mem_id = None;
        while let Some(c) = rest.chars().next() {
            rest = rest.split_at(c.len_utf8()).1;
            match c {
                '/' => {
                    if flags.is_some() {
                        return Err(NameError::Duplicate { what: "/flags" });
                    }
                    let end = rest.find(['@', '/']).unwrap_or(rest.len());
                    let (letters, r) = rest.split_at(end);
                    let mut f = 0u64;
                    for ch in letters.chars() {
                        f |= match ch {
                            'x' => NR_EXCLUSIVE,
                            'z' => NR_ZCOPY_MON,
                            't' => NR_MONITOR_TX,
                            'r' => NR_MONITOR_RX,
                            'R' => NR_RX_RINGS_ONLY,
                            'T' => NR_TX_RINGS_ONLY,
                            _ => return Err(NameError::UnknownFlag { ch }),
                        };
                    }
                    flags = Some(f);
                    rest = r;
                }
                '@' => {
                    if mem_id.is_some() {
                        return Err(NameError::Duplicate { what: "@memid" });
                    }
                    let (v, r) =
                        take_number(rest).ok_or(NameError::MissingNumber { after: '@' })?;
                    if v == 0 || v > u32::from(u16::MAX) {
                        return Err(NameError::BadMemId { mem_id: v });
                    }
                    // PANIC: checked above that v fits u16.
                    mem_id = Some(v as u16);
                    rest = r;
                }
                ch => return Err(NameError::UnexpectedChar { ch }),
            }
        }

        Ok(PortName {
            base,
            pipe,
            rings,
            flags: flags.unwrap_or(0),
            mem_id,
        })
    }

    /// Whether the name designates a VALE switch port (possibly a pipe on it).
    pub const fn is_vale(&self) -> bool {
        matches!(self.base, Base::Vale { .. })
    }
}

/// Writes the canonical form of the port itself (base and pipe, without ring selection,
/// flags or memory id): the key under which a daemon finds the port, like netmap's `nr_name`.
pub struct PortKey<'n, 'a>(pub &'n PortName<'a>);

impl fmt::Display for PortKey<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.base {
            Base::Vale { switch, port } => write!(f, "{switch}:{port}")?,
            Base::Nic { ifname } => write!(f, "{ifname}")?,
        }
        match self.0.pipe {
            Some(Pipe {
                role: PipeRole::Master,
                id,
            }) => write!(f, "{{{id}"),
            Some(Pipe {
                role: PipeRole::Slave,
                id,
            }) => write!(f, "}}{id}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for PortName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Base::Nic { .. } = self.base {
            f.write_str("netmap:")?;
        }
        write!(f, "{}", PortKey(self))?;
        match self.rings {
            RingSelection::AllNic => {}
            RingSelection::NicSw => f.write_str("*")?,
            RingSelection::Sw => f.write_str("^")?,
            RingSelection::OneSw(n) => write!(f, "^{n}")?,
            RingSelection::OneNic(n) => write!(f, "-{n}")?,
        }
        if self.flags != 0 {
            f.write_str("/")?;
            for (bit, ch) in [
                (NR_EXCLUSIVE, 'x'),
                (NR_ZCOPY_MON, 'z'),
                (NR_MONITOR_TX, 't'),
                (NR_MONITOR_RX, 'r'),
                (NR_RX_RINGS_ONLY, 'R'),
                (NR_TX_RINGS_ONLY, 'T'),
            ] {
                if self.flags & bit != 0 {
                    write!(f, "{ch}")?;
                }
            }
        }
        if let Some(m) = self.mem_id {
            write!(f, "@{m}")?;
        }
        Ok(())
    }
}
