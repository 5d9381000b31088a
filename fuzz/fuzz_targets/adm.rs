//! `keeplb adm` on arbitrary command lines and `-R` input: the popt scanner, ipvsadm's
//! option parser, the restore reader, the table's rules and the listings. Must never
//! panic or hang; every parsed command must survive the JSON control protocol unchanged.
//!
//! Input: words separated by NUL bytes, then optionally a 0xFF byte and what `-R` reads on
//! its standard input.
//!
//! Run from fuzz/: `cargo fuzz run -s none adm corpus/adm seeds/adm -- -dict=dicts/adm.dict`.

#![no_main]

use keeplb_control::adm::run;
use keeplb_control::api::{Request, RequestBody, decode_request};
use keeplb_control::names::{NameFiles, NoNames};
use keeplb_control::parse::parse_args;
use keeplb_control::restore::restore_lines;
use keeplb_control::table::MemoryTable;
use libfuzzer_sys::fuzz_target;

const SERVICES: &str = "http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\nsip 5060/udp\n";
const HOSTS: &str = "127.0.0.1 localhost\n10.0.0.1 web1 web1.example\n::1 ip6-localhost\n";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0xff);
    let words: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let stdin = parts.next().unwrap_or_default();
    let names = NameFiles::parse(SERVICES, HOSTS);

    if let Ok(command) = parse_args("ipvsadm", &words, &names) {
        check_json_round_trip(command);
    }
    let text = String::from_utf8_lossy(stdin);
    for line in restore_lines(&text) {
        if let Ok(command) = parse_args("ipvsadm", &line, &NoNames) {
            check_json_round_trip(command);
        }
    }

    let mut table = MemoryTable::new();
    let _ = run("ipvsadm", &words, &mut &stdin[..], &mut table, &names);
    // Whatever the table now holds must list and save.
    for listing in [
        &["-L"][..],
        &["-Ln", "--stats"],
        &["-Ln", "--rate", "--exact"],
        &["-Sn"],
        &["-S"],
        &["-Lnc"],
        &["-L", "--timeout"],
        &["-L", "--daemon"],
        &["-Ln", "--thresholds", "--persistent-conn", "--tun-info"],
    ] {
        let args: Vec<String> = listing.iter().map(|w| (*w).to_owned()).collect();
        let out = run("ipvsadm", &args, &mut std::io::empty(), &mut table, &names);
        assert_eq!(out.exit_code, 0, "{listing:?}: {}", out.stderr);
    }
});

/// The daemon receives parsed commands as JSON: they must decode to what was sent.
fn check_json_round_trip(command: keeplb_control::AdmCommand) {
    let request = Request::new(RequestBody::Adm { command });
    let json = serde_json::to_string(&request).expect("a request serialises");
    let decoded = decode_request(&json).unwrap_or_else(|e| panic!("{json} does not decode: {e:?}"));
    assert_eq!(decoded, request, "{json}");
}
