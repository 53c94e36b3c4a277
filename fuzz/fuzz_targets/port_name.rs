//! Any string as a port name: parsing never panics, and an accepted name prints back to a
//! name that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptnet_spec::name::PortName;

fuzz_target!(|s: &str| {
    if let Ok(n) = PortName::parse(s) {
        let printed = n.to_string();
        let again = PortName::parse(&printed).expect("a printed name parses");
        assert_eq!(again, n, "{s:?} printed as {printed:?}");
    }
});
