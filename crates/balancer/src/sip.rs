//! The SIP persistence engine (`ipvsadm --pe sip`, keepalived `persistence_engine sip`):
//! a persistent UDP service keys its templates by the SIP Call-ID of the datagram too,
//! so every message of a call goes to the same real server, whichever client port (or,
//! with a coarse granularity, whichever client) it comes from.
//!
//! What counts as the Call-ID follows the kernel's `ip_vs_pe_sip` (which uses
//! netfilter's SIP header reader): a header line, not the request or status line and
//! not a folded continuation, named `Call-ID` in any case or by its compact form `i`;
//! spaces (not tabs) around the colon, or a fold onto the next line; then the value, a
//! SIP word, optionally `@` and a second word. A message without one (a header whose
//! value is no word does not count), with one longer than [`MAX_CALL_ID`] bytes, or with
//! one not ended by a line break, has no Call-ID: the kernel then drops the datagram.
//!
//! Three kernel quirks are not reproduced; each only changes which bytes key a call,
//! never whether a call's messages stay together: after a folded line the kernel skips
//! the first character of the value; after two Call-ID headers without a word it
//! searches on from too far; and its C library counts Latin-1 letters as word
//! characters, where this counts ASCII only.

/// The longest Call-ID kept (the kernel's `IP_VS_PEDATA_MAXLEN`).
pub const MAX_CALL_ID: usize = 255;

const FULL_NAME: &[u8] = b"call-id";
const COMPACT_NAME: &[u8] = b"i";

/// The Call-ID of the SIP message `message`, as the kernel's SIP persistence engine
/// finds it.
pub fn call_id(message: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while let Some(start) = next_header_line(message, at) {
        at = start;
        let line = &message[start..];
        let name_len = if starts_with_ignore_case(line, FULL_NAME) {
            FULL_NAME.len()
        } else if starts_with_ignore_case(line, COMPACT_NAME)
            && line
                .get(COMPACT_NAME.len())
                .is_some_and(|c| !c.is_ascii_alphabetic())
        {
            COMPACT_NAME.len()
        } else {
            continue;
        };
        // A Call-ID header without its colon ends the search, as in the kernel.
        let colon = skip_whitespace(message, start + name_len)?;
        if message.get(colon) != Some(&b':') {
            return None;
        }
        let value = skip_whitespace(message, colon + 1)?;
        let len = value_len(&message[value..]);
        if len == 0 {
            // Not a Call-ID value: the kernel looks for another Call-ID header.
            at = value;
            continue;
        }
        let end = value + len;
        let ends_line = matches!(message.get(end), Some(b'\r' | b'\n'));
        return (len <= MAX_CALL_ID && ends_line).then(|| &message[value..end]);
    }
    None
}

/// Where the next header line after `from` starts: after a line break, and not a
/// continuation (which starts with a space or a tab).
fn next_header_line(message: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let brk = i + message
            .get(i..)?
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')?;
        i = brk + 1;
        if message[brk] == b'\r' && message.get(i) == Some(&b'\n') {
            i += 1;
        }
        match message.get(i)? {
            b' ' | b'\t' => continue,
            _ => return Some(i),
        }
    }
}

/// The first byte at or after `i` that is not a space, following folded lines (a line
/// break then spaces or tabs); `None` at the end of the message or at a line break that
/// ends the header.
fn skip_whitespace(message: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match message.get(i)? {
            b' ' => i += 1,
            b'\r' | b'\n' => {
                let mut next = i + 1;
                if message[i] == b'\r' && message.get(next) == Some(&b'\n') {
                    next += 1;
                }
                if !matches!(message.get(next)?, b' ' | b'\t') {
                    return None;
                }
                i = next;
                while matches!(message.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
            }
            _ => return Some(i),
        }
    }
}

/// The length of a Call-ID value at the start of `value`: a word, or a word, `@` and a
/// word (none when the second word is empty).
fn value_len(value: &[u8]) -> usize {
    let local = word_len(value);
    if local == 0 || value.get(local) != Some(&b'@') {
        return local;
    }
    match word_len(&value[local + 1..]) {
        0 => 0,
        domain => local + 1 + domain,
    }
}

fn word_len(text: &[u8]) -> usize {
    text.iter().take_while(|&&c| is_word_char(c)).count()
}

/// RFC 3261's `word` characters.
fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'!'
                | b'%'
                | b'*'
                | b'_'
                | b'+'
                | b'`'
                | b'\''
                | b'~'
                | b'('
                | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3261 section 24.2, message F1 (Alice's INVITE), as sent over UDP.
    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
Content-Length: 0\r\n\r\n";

    fn with_call_id_line(line: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n{line}\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn finds_the_call_id_of_an_rfc_3261_invite() {
        assert_eq!(
            call_id(INVITE),
            Some(&b"3848276298220188511@atlanta.example.com"[..])
        );
    }

    #[test]
    fn the_header_name_is_case_insensitive_and_has_a_compact_form() {
        for line in ["call-id: abc@h", "CALL-ID:abc@h", "i: abc@h", "I :  abc@h"] {
            assert_eq!(
                call_id(&with_call_id_line(line)),
                Some(&b"abc@h"[..]),
                "{line}"
            );
        }
        // `i` must not be the start of a longer name.
        assert_eq!(call_id(&with_call_id_line("in: abc@h")), None);
        // Within a line only spaces may surround the colon.
        assert_eq!(call_id(&with_call_id_line("Call-ID:\tabc@h")), None);
        assert_eq!(call_id(&with_call_id_line("Call-ID\t: abc@h")), None);
    }

    #[test]
    fn a_value_may_be_folded_onto_the_next_line() {
        assert_eq!(
            call_id(&with_call_id_line("Call-ID:\r\n  folded-id")),
            Some(&b"folded-id"[..])
        );
    }

    #[test]
    fn a_call_id_header_without_a_word_is_passed_over() {
        let message = b"OPTIONS s SIP/2.0\r\nCall-ID: ;\r\ni: second@h\r\n\r\n";
        assert_eq!(call_id(message), Some(&b"second@h"[..]));
        let twice = b"OPTIONS s SIP/2.0\r\nCall-ID: ;\r\ni: ;\r\nCall-ID: third@h\r\n\r\n";
        assert_eq!(call_id(twice), Some(&b"third@h"[..]));
    }

    #[test]
    fn lines_ended_by_lf_alone_count_too() {
        let message = b"OPTIONS sip:a@b SIP/2.0\nCall-ID: lf-only\nCSeq: 1 OPTIONS\n\n";
        assert_eq!(call_id(message), Some(&b"lf-only"[..]));
    }

    #[test]
    fn only_header_lines_are_searched() {
        // In the request line, and in a continuation line, it is no header.
        assert_eq!(call_id(b"Call-ID: x SIP/2.0\r\nCSeq: 1\r\n\r\n"), None);
        assert_eq!(
            call_id(b"OPTIONS s SIP/2.0\r\nSubject: a\r\n Call-ID: x\r\n\r\n"),
            None
        );
    }

    #[test]
    fn messages_without_a_usable_call_id_have_none() {
        assert_eq!(call_id(b""), None);
        assert_eq!(call_id(b"not sip at all"), None);
        assert_eq!(
            call_id(&with_call_id_line("Call-ID: ")),
            None,
            "the line ends"
        );
        assert_eq!(call_id(&with_call_id_line("Call-ID abc")), None, "no colon");
        assert_eq!(
            call_id(&with_call_id_line("Call-ID: abc@")),
            None,
            "no domain"
        );
        assert_eq!(
            call_id(&with_call_id_line("Call-ID: a=b@h")),
            None,
            "`=` is no word character"
        );
        assert_eq!(
            call_id(&with_call_id_line("Call-ID: a b")),
            None,
            "not ended by a line break"
        );
        assert_eq!(
            call_id(b"OPTIONS s SIP/2.0\r\nCall-ID: at-the-end"),
            None,
            "the message ends inside the header"
        );
        let longest = "x".repeat(MAX_CALL_ID);
        assert_eq!(
            call_id(&with_call_id_line(&format!("Call-ID: {longest}"))),
            Some(longest.as_bytes())
        );
        let too_long = "x".repeat(MAX_CALL_ID + 1);
        assert_eq!(
            call_id(&with_call_id_line(&format!("Call-ID: {too_long}"))),
            None
        );
    }
}
