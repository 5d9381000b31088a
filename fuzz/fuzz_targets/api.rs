//! The control API as the daemon serves it (one JSON request per line on the control
//! socket, or an HTTP `/api` body): `decode_request`, the table's rules through
//! `MemoryTable::handle`, the JSON response, and the ipvsadm listings of what the requests
//! made of the table. Must never panic or hang.
//!
//! Run from fuzz/: `cargo fuzz run -s none api corpus/api seeds/api -- -dict=dicts/api.dict`.

#![no_main]

use keeplb_control::api::{Response, decode_request};
use keeplb_control::command::ListFormat;
use keeplb_control::format;
use keeplb_control::names::NameFiles;
use keeplb_control::table::MemoryTable;
use libfuzzer_sys::fuzz_target;

const SERVICES: &str = "http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\n";
const HOSTS: &str = "127.0.0.1 localhost\n10.0.0.1 web1\n::1 ip6-localhost\n";

fuzz_target!(|data: &[u8]| {
    let mut table = MemoryTable::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        // As the servers do: the socket trims the line end, HTTP the whole body.
        let response = match std::str::from_utf8(line) {
            Ok(text) => match decode_request(text.trim()) {
                Ok(request) => {
                    let json = serde_json::to_string(&request).expect("a request serialises");
                    assert_eq!(decode_request(&json).as_ref(), Ok(&request), "{json}");
                    table.handle(&request)
                }
                Err(response) => response,
            },
            Err(_) => continue,
        };
        let json = serde_json::to_string(&response).expect("a response serialises");
        let _: Response = serde_json::from_str(&json).expect("a response decodes");
    }
    let names = NameFiles::parse(SERVICES, HOSTS);
    let snapshot = table.content();
    for numeric in [false, true] {
        let format = ListFormat {
            numeric,
            ..ListFormat::default()
        };
        let _ = format::list_all(snapshot, format, &names);
        let _ = format::list_all(
            snapshot,
            ListFormat {
                stats: true,
                exact: true,
                ..format
            },
            &names,
        );
        let _ = format::list_all(
            snapshot,
            ListFormat {
                rate: true,
                thresholds: true,
                persistent_conn: true,
                tun_info: true,
                ..format
            },
            &names,
        );
        let _ = format::save(snapshot, numeric, &names);
        let _ = format::list_connections(&snapshot.connections, format, &names);
        for service in &snapshot.services {
            let _ = format::list_service(snapshot, &service.config.key, format, &names);
        }
    }
    let _ = format::list_timeouts(&snapshot.timeouts);
    let _ = format::list_daemons(&snapshot.daemons);
});
