//! The committed C header is exactly what the crate generates, and a C compiler agrees with
//! every size and offset in it.
//!
//! `PTNET_BLESS=1 cargo test -p ptnet-spec --test c_header` rewrites the header.

use std::path::{Path, PathBuf};
use std::process::Command;

fn generated() -> String {
    let mut s = String::new();
    ptnet_spec::c::write_header(&mut s, &ptnet_spec::HEADER).expect("formatting to a String");
    s
}

fn header_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include/ptnet_spec.h")
}

#[test]
fn committed_header_is_not_stale() {
    let want = generated();
    let path = header_path();
    if std::env::var_os("PTNET_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write header");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: regenerate it with PTNET_BLESS=1 cargo test -p ptnet-spec --test c_header",
        path.display()
    );
}

#[test]
fn c_compiler_agrees_with_every_rust_offset() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("layout_check");
    // Compile against the freshly generated header so this test is independent of the
    // staleness test above.
    let inc = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("include");
    std::fs::create_dir_all(&inc).unwrap();
    std::fs::write(inc.join("ptnet_spec.h"), generated()).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(&inc)
        .arg(dir.join("tests/c/layout_check.c"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "the C layout checks failed to compile");
    let run = Command::new(&out).output().expect("run layout_check");
    let text = String::from_utf8(run.stdout).unwrap();
    let expect = format!(
        "netmap_slot 16\nnetmap_ring 256 256\nnetmap_if 56 56\nnmreq_header 88\n\
         nmreq_register 56\nptnet_config {}\n",
        ptnet_spec::device::PTNET_CONFIG_SIZE
    );
    assert_eq!(text, expect);
}

#[test]
fn every_struct_field_is_listed_once_and_in_order() {
    for s in ptnet_spec::HEADER.structs {
        let mut end = 0;
        for f in s.fields {
            assert!(
                f.offset >= end,
                "{}.{} overlaps the previous field",
                s.name,
                f.name
            );
            end = f.offset;
        }
        assert!(end < s.size, "{}: last field beyond the size", s.name);
    }
}
