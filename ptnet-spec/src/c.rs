//! The C view of the shared layouts: descriptors built by [`shared_struct!`](crate::shared_struct) and
//! [`shared_consts!`](crate::shared_consts) from the one Rust declaration, and the generator of
//! `include/ptnet_spec.h`.
//!
//! Every struct and constant that C code (QEMU, the FreeBSD driver) needs is declared once in
//! Rust with one of the two macros below. The macro emits the Rust item and a descriptor with
//! the C type of each field and its offset *as computed by rustc*; the generator writes the C
//! definitions from the field list and `_Static_assert`s from the Rust offsets, so compiling
//! the header proves that C and Rust agree.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};

/// The C spelling of a field's type: a scalar, or a one-dimensional array of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CType {
    /// The C scalar type (`uint32_t`, ...).
    pub name: &'static str,
    /// Array length, 0 for a scalar.
    pub array: usize,
}

/// Rust types that have a fixed C spelling.
pub trait HasCType {
    /// The C spelling.
    const C: CType;
}

macro_rules! scalar_c_types {
    ($($t:ty => $c:literal),* $(,)?) => {
        $(impl HasCType for $t { const C: CType = CType { name: $c, array: 0 }; })*
    };
}

scalar_c_types! {
    u8 => "uint8_t", u16 => "uint16_t", u32 => "uint32_t", u64 => "uint64_t",
    i8 => "int8_t", i16 => "int16_t", i32 => "int32_t", i64 => "int64_t",
    AtomicU16 => "uint16_t", AtomicU32 => "uint32_t", AtomicU64 => "uint64_t",
}

impl<T: HasCType, const N: usize> HasCType for [T; N] {
    const C: CType = {
        assert!(
            T::C.array == 0,
            "only one-dimensional arrays have a C spelling here"
        );
        CType {
            name: T::C.name,
            array: N,
        }
    };
}

/// One field of a shared struct.
#[derive(Debug, Clone, Copy)]
pub struct CField {
    /// Field name (the same in Rust and C).
    pub name: &'static str,
    /// The field's documentation (its first paragraph goes into the header).
    pub doc: &'static str,
    /// C type.
    pub ty: CType,
    /// Byte offset computed by rustc.
    pub offset: usize,
}

/// A shared struct as C sees it.
#[derive(Debug, Clone, Copy)]
pub struct CStruct {
    /// C tag, without the `struct` keyword.
    pub name: &'static str,
    /// The struct's documentation (its first paragraph goes into the header).
    pub doc: &'static str,
    /// Size computed by rustc.
    pub size: usize,
    /// The fixed-size fields, in order.
    pub fields: &'static [CField],
    /// A trailing flexible array member (`ring_ofs[]`, `slot[]`), as (name, element type).
    pub flex: Option<(&'static str, CType)>,
}

/// Implemented by every struct declared with [`shared_struct!`](crate::shared_struct).
pub trait SharedLayout {
    /// Its C description.
    const C_LAYOUT: CStruct;
}

/// A named constant exported to C.
#[derive(Debug, Clone, Copy)]
pub struct CConst {
    /// Rust name; C gets it with a `PTNET_` prefix (unless it already has one).
    pub name: &'static str,
    /// The documentation (its first paragraph goes into the header).
    pub doc: &'static str,
    /// The value, widened.
    pub value: u64,
    /// Width in bytes of the Rust type (picks the C literal suffix).
    pub width: usize,
}

/// A documented group of constants.
#[derive(Debug, Clone, Copy)]
pub struct CConstGroup {
    /// Heading written above the group.
    pub title: &'static str,
    /// The constants.
    pub consts: &'static [CConst],
}

/// Declares a `#[repr(C)]` struct shared with C, and its [`SharedLayout`] descriptor.
///
/// ```text
/// shared_struct! {
///     /// A netmap slot.
///     #[c_name = "ptnet_nm_slot"]
///     pub struct NetmapSlot { /// Buffer index. pub buf_idx: u32, ... }
/// }
/// ```
/// Doc comments come first, then `#[c_name = ..]`, then other attributes. An optional
/// `flex NAME: TYPE;` clause after the fields names a C flexible array member that starts at
/// `size_of::<Self>()`.
#[macro_export]
macro_rules! shared_struct {
    (
        $(#[doc = $doc:literal])*
        #[c_name = $cname:literal]
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $fvis:vis $field:ident : $fty:ty
            ),* $(,)?
        }
        $(flex $flex:ident : $flexty:ty ;)?
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[doc = $fdoc])*
                $fvis $field: $fty,
            )*
        }

        impl $crate::c::HasCType for $name {
            const C: $crate::c::CType = $crate::c::CType {
                name: concat!("struct ", $cname),
                array: 0,
            };
        }

        impl $crate::c::SharedLayout for $name {
            const C_LAYOUT: $crate::c::CStruct = $crate::c::CStruct {
                name: $cname,
                doc: concat!($($doc, "\n",)* ""),
                size: ::core::mem::size_of::<$name>(),
                fields: &[
                    $($crate::c::CField {
                        name: stringify!($field),
                        doc: concat!($($fdoc, "\n",)* ""),
                        ty: <$fty as $crate::c::HasCType>::C,
                        offset: ::core::mem::offset_of!($name, $field),
                    }),*
                ],
                flex: {
                    #[allow(unused_mut, unused_assignments)]
                    let mut f = None;
                    $(f = Some((stringify!($flex), <$flexty as $crate::c::HasCType>::C));)?
                    f
                },
            };
        }
    };
}

/// Declares a group of constants shared with C: `pub const NAME: TYPE = VALUE;` items plus a
/// `pub const GROUP: CConstGroup` listing them for the header generator.
#[macro_export]
macro_rules! shared_consts {
    (
        $(#[doc = $gdoc:literal])*
        group $group:ident;
        $(
            $(#[doc = $doc:literal])*
            pub const $name:ident : $ty:ty = $value:expr;
        )*
    ) => {
        $(
            $(#[doc = $doc])*
            pub const $name: $ty = $value;
        )*

        $(#[doc = $gdoc])*
        pub const $group: $crate::c::CConstGroup = $crate::c::CConstGroup {
            title: concat!($($gdoc, "\n",)* ""),
            consts: &[
                $($crate::c::CConst {
                    name: stringify!($name),
                    doc: concat!($($doc, "\n",)* ""),
                    value: $name as u64,
                    width: ::core::mem::size_of::<$ty>(),
                }),*
            ],
        };
    };
}

/// Everything the header contains, in order.
pub struct HeaderContents {
    /// Constant groups, written first.
    pub groups: &'static [CConstGroup],
    /// Structs, written after the constants.
    pub structs: &'static [CStruct],
}

/// Writes the first paragraph of a doc string as a C comment.
fn write_comment(out: &mut dyn Write, indent: &str, doc: &str) -> fmt::Result {
    let mut lines = doc
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .peekable();
    let Some(first) = lines.next() else {
        return Ok(());
    };
    if lines.peek().is_none() {
        out.write_str(indent)?;
        out.write_str("/* ")?;
        write_comment_text(out, first)?;
        return out.write_str(" */\n");
    }
    writeln!(out, "{indent}/*")?;
    for l in core::iter::once(first).chain(lines) {
        write!(out, "{indent} * ")?;
        write_comment_text(out, l)?;
        out.write_str("\n")?;
    }
    writeln!(out, "{indent} */")
}

/// Comment text with any `*/` defused.
fn write_comment_text(out: &mut dyn Write, text: &str) -> fmt::Result {
    for (i, part) in text.split("*/").enumerate() {
        if i > 0 {
            out.write_str("* /")?;
        }
        out.write_str(part)?;
    }
    Ok(())
}

/// The C name of a constant: `PTNET_` + the Rust name, unless that already starts with it.
pub fn c_const_name(rust_name: &str) -> CConstName<'_> {
    CConstName(rust_name)
}

/// Display adapter returned by [`c_const_name`].
pub struct CConstName<'a>(&'a str);

impl fmt::Display for CConstName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.starts_with("PTNET_") {
            f.write_str("PTNET_")?;
        }
        f.write_str(self.0)
    }
}

fn c_literal(value: u64, width: usize) -> CLiteral {
    CLiteral { value, width }
}

struct CLiteral {
    value: u64,
    width: usize,
}

impl fmt::Display for CLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.width, self.value < 256) {
            (8, true) => write!(f, "UINT64_C({})", self.value),
            (8, false) => write!(f, "UINT64_C({:#x})", self.value),
            (_, true) => write!(f, "{}u", self.value),
            (_, false) => write!(f, "{:#x}u", self.value),
        }
    }
}

/// Writes the C header for `contents`.
pub fn write_header(out: &mut dyn Write, contents: &HeaderContents) -> fmt::Result {
    writeln!(
        out,
        "/* SPDX-License-Identifier: BSD-2-Clause */\n\
         /*\n \
         * ptnet_spec.h: ptnet's shared binary layouts for C (QEMU, the FreeBSD driver).\n \
         *\n \
         * GENERATED from the ptnet-spec crate; do not edit. Regenerate with\n \
         *   PTNET_BLESS=1 cargo test -p ptnet-spec --test c_header\n \
         * ptnet-spec/SPEC.md is the normative prose; all multi-byte fields are little endian.\n \
         */\n\
         #ifndef PTNET_SPEC_H\n\
         #define PTNET_SPEC_H\n\n\
         #ifdef _KERNEL\n\
         #include <sys/types.h>\n\
         #else\n\
         #include <stdint.h>\n\
         #include <stddef.h>\n\
         #endif"
    )?;
    for g in contents.groups {
        writeln!(out)?;
        write_comment(out, "", g.title)?;
        for c in g.consts {
            write_comment(out, "", c.doc)?;
            writeln!(
                out,
                "#define {} {}",
                c_const_name(c.name),
                c_literal(c.value, c.width)
            )?;
        }
    }
    for s in contents.structs {
        writeln!(out)?;
        write_comment(out, "", s.doc)?;
        writeln!(out, "struct {} {{", s.name)?;
        for f in s.fields {
            write_comment(out, "\t", f.doc)?;
            if f.ty.array == 0 {
                writeln!(out, "\t{} {};", f.ty.name, f.name)?;
            } else {
                writeln!(out, "\t{} {}[{}];", f.ty.name, f.name, f.ty.array)?;
            }
        }
        if let Some((name, ty)) = s.flex {
            writeln!(out, "\t{} {}[];", ty.name, name)?;
        }
        writeln!(out, "}};")?;
    }
    writeln!(
        out,
        "\n/* Layout checks: the numbers below were computed by rustc from the Rust declarations. */\n\
         #ifndef PTNET_SPEC_NO_ASSERTS"
    )?;
    for s in contents.structs {
        writeln!(
            out,
            "_Static_assert(sizeof(struct {0}) == {1}, \"struct {0}: size\");",
            s.name, s.size
        )?;
        for f in s.fields {
            writeln!(
                out,
                "_Static_assert(offsetof(struct {0}, {1}) == {2}, \"struct {0}: {1}\");",
                s.name, f.name, f.offset
            )?;
        }
        if let Some((name, _)) = s.flex {
            writeln!(
                out,
                "_Static_assert(offsetof(struct {0}, {1}) == {2}, \"struct {0}: {1}[]\");",
                s.name, name, s.size
            )?;
        }
    }
    writeln!(
        out,
        "#endif /* !PTNET_SPEC_NO_ASSERTS */\n\n#endif /* !PTNET_SPEC_H */"
    )
}
