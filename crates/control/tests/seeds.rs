//! The ipvsadm sessions of the product seeds (/work/shared/seeds/000_*.txt): their commands
//! run through `keeplb_control::run` against a [`MemoryTable`], and the listings must be the
//! ones the seed shows.

#![allow(clippy::unwrap_used)]

use keeplb_control::names::NoNames;
use keeplb_control::snapshot::ConnEntry;
use keeplb_control::table::MemoryTable;
use keeplb_control::{AdmOutput, run};

fn adm(table: &mut MemoryTable, line: &str) -> AdmOutput {
    let args: Vec<String> = line.split_whitespace().skip(1).map(str::to_owned).collect();
    run("ipvsadm", &args, &mut std::io::empty(), table, &NoNames)
}

fn ok(table: &mut MemoryTable, line: &str) {
    let out = adm(table, line);
    assert_eq!((out.exit_code, out.stderr.as_str()), (0, ""), "{line}");
}

/// Seed 000, direct routing: the director's setup, then `ipvsadm -Ln` after three
/// requests have finished (3 inactive connections on each real server).
#[test]
fn direct_routing_session_lists_as_in_the_seed() {
    let mut table = MemoryTable::new();
    for line in [
        "ipvsadm -C",
        "ipvsadm -A -t 192.168.11.123:80 -s rr",
        "ipvsadm -a -t 192.168.11.123:80 -r 192.168.11.34:80 -g",
        "ipvsadm -a -t 192.168.11.123:80 -r 192.168.11.35:80 -g",
    ] {
        ok(&mut table, line);
    }
    for dest in &mut table.content_mut().services[0].dests {
        dest.inactive_conns = 3;
    }
    let out = adm(&mut table, "ipvsadm -Ln");
    let seed = "IP Virtual Server version 1.2.1 (size=4096)\n\
                Prot LocalAddress:Port Scheduler Flags\n  \
                -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                TCP  192.168.11.123:80 rr\n  \
                -> 192.168.11.34:80             Route   1      0          3         \n  \
                -> 192.168.11.35:80             Route   1      0          3  \n";
    let ours: Vec<&str> = out.stdout.lines().collect();
    let theirs: Vec<&str> = seed.lines().collect();
    assert_eq!(ours.len(), theirs.len(), "{}", out.stdout);
    // the seed's copy lost the trailing blanks of its last row; every other byte must match
    let last = theirs.len() - 1;
    assert_eq!(ours[..last], theirs[..last]);
    assert_eq!(ours[last].trim_end(), theirs[last].trim_end());
    assert!(
        ours[last].ends_with("3         "),
        "InActConn keeps its %-10u padding"
    );
}

/// Seed 000, `ipvsadm -Lnc` with three connections in FIN_WAIT.
#[test]
fn connection_listing_matches_the_seed() {
    let conn = |client_port: u16, dest: &str, expires: u32| ConnEntry {
        protocol: "TCP".to_owned(),
        client: "192.168.11.30".parse().unwrap(),
        client_port,
        virtual_address: "192.168.11.123".parse().unwrap(),
        virtual_port: 80,
        dest: dest.parse().unwrap(),
        dest_port: 80,
        state: "FIN_WAIT".to_owned(),
        expires,
        persistence_engine: None,
    };
    let mut table = MemoryTable::new();
    table.content_mut().connections = vec![
        conn(10932, "192.168.11.34", 115),
        conn(10936, "192.168.11.35", 116),
        conn(10934, "192.168.11.34", 116),
    ];
    let out = adm(&mut table, "ipvsadm -Lnc");
    assert_eq!(
        out.stdout,
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n\
         TCP 01:55  FIN_WAIT    192.168.11.30:10932 192.168.11.123:80  192.168.11.34:80\n\
         TCP 01:56  FIN_WAIT    192.168.11.30:10936 192.168.11.123:80  192.168.11.35:80\n\
         TCP 01:56  FIN_WAIT    192.168.11.30:10934 192.168.11.123:80  192.168.11.34:80\n"
    );
    assert_eq!(out.exit_code, 0);
}

/// Seed 000's command reference (add, edit, delete, clear; add, edit, delete a real
/// server) as one session, with the listing after each step.
#[test]
fn command_reference_session_edits_the_table_like_ipvsadm() {
    let mut table = MemoryTable::new();
    let head = "IP Virtual Server version 1.2.1 (size=4096)\n\
                Prot LocalAddress:Port Scheduler Flags\n  \
                -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";
    let steps: &[(&str, &str)] = &[
        (
            "ipvsadm -A -t 192.168.11.100:80 -s rr",
            "TCP  192.168.11.100:80 rr\n",
        ),
        (
            "ipvsadm -E -t 192.168.11.100:80 -s wrr",
            "TCP  192.168.11.100:80 wrr\n",
        ),
        (
            "ipvsadm -a -t 192.168.11.100:80 -r 192.168.11.11 -g -w 2",
            "TCP  192.168.11.100:80 wrr\n  -> 192.168.11.11:80             Route   2      0          0         \n",
        ),
        (
            "ipvsadm -a -t 192.168.11.100:80 -r 192.168.11.12:8080 -m",
            "TCP  192.168.11.100:80 wrr\n  -> 192.168.11.11:80             Route   2      0          0         \n  \
             -> 192.168.11.12:8080           Masq    1      0          0         \n",
        ),
        (
            // an edit sends every field: without -m the server goes back to routing,
            // whose port is the service's, so this edits 192.168.11.12:80, which is absent
            "ipvsadm -e -t 192.168.11.100:80 -r 192.168.11.12:8080 -w 0",
            "TCP  192.168.11.100:80 wrr\n  -> 192.168.11.11:80             Route   2      0          0         \n  \
             -> 192.168.11.12:8080           Masq    1      0          0         \n",
        ),
        (
            "ipvsadm -e -t 192.168.11.100:80 -r 192.168.11.12:8080 -m -w 0",
            "TCP  192.168.11.100:80 wrr\n  -> 192.168.11.11:80             Route   2      0          0         \n  \
             -> 192.168.11.12:8080           Masq    0      0          0         \n",
        ),
        (
            "ipvsadm -d -t 192.168.11.100:80 -r 192.168.11.11",
            "TCP  192.168.11.100:80 wrr\n  -> 192.168.11.12:8080           Masq    0      0          0         \n",
        ),
        ("ipvsadm -D -t 192.168.11.100:80", ""),
        (
            "ipvsadm -A -t 192.168.11.100:80 -s rr",
            "TCP  192.168.11.100:80 rr\n",
        ),
        ("ipvsadm -C", ""),
    ];
    for (line, services) in steps {
        let out = adm(&mut table, line);
        if line.contains("-e -t 192.168.11.100:80 -r 192.168.11.12:8080 -w 0") {
            assert_eq!(
                (out.exit_code, out.stderr.as_str()),
                (255, "No such destination\n")
            );
        } else {
            assert_eq!((out.exit_code, out.stderr.as_str()), (0, ""), "{line}");
        }
        let listing = adm(&mut table, "ipvsadm -Ln");
        assert_eq!(listing.stdout, format!("{head}{services}"), "after {line}");
    }
    let out = adm(
        &mut table,
        "ipvsadm -a -t 192.168.11.100:80 -r 192.168.11.11 -g -w 2",
    );
    assert_eq!(
        (out.exit_code, out.stderr.as_str()),
        (255, "Service not defined\n")
    );
    let out = adm(&mut table, "ipvsadm -D -t 192.168.11.100:80");
    assert_eq!(
        (out.exit_code, out.stderr.as_str()),
        (255, "No such service\n")
    );
}

/// Seed 003: NAT with persistence.
#[test]
fn persistent_nat_session_lists_persistence() {
    let mut table = MemoryTable::new();
    for line in [
        "ipvsadm -C",
        "ipvsadm -A -t 192.168.109.128:80 -s wlc -p 300",
        "ipvsadm -a -t 192.168.109.128:80 -r 192.168.126.131:80 -m -w 1",
        "ipvsadm -a -t 192.168.109.128:80 -r 192.168.126.132:80 -m -w 1",
    ] {
        ok(&mut table, line);
    }
    let out = adm(&mut table, "ipvsadm -S -n");
    assert_eq!(
        out.stdout,
        "-A -t 192.168.109.128:80 -s wlc -p 300\n\
         -a -t 192.168.109.128:80 -r 192.168.126.131:80 -m -w 1\n\
         -a -t 192.168.109.128:80 -r 192.168.126.132:80 -m -w 1\n"
    );
}
