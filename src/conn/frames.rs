//! Just enough HTTP/2 framing to watch a connection's bytes go by: where
//! each frame starts, its type and flags, and a GOAWAY's error code.
//!
//! [`FrameWalker`] is fed the bytes of one direction as they pass, in
//! whatever pieces the socket gives, and never buffers more than a frame
//! header and eight payload bytes; it skips payloads by counting. It trusts
//! the lengths it reads: on the server's side of the connection (what
//! `Guarded` watches) they come from hyper, and on the client's side a
//! peer that lies only confuses its own handshake deadline, which then
//! closes it.

/// The client connection preface, before the first frame.
pub const PREFACE_LEN: usize = 24;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// The flag that ends a header block.
pub const END_HEADERS: u8 = 0x4;
/// GOAWAY's error code for a peer "generating excessive load".
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What a frame's start told the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A frame header: type and flags.
    Frame { kind: u8, flags: u8 },
    /// A GOAWAY's error code.
    GoAway(u32),
}

/// Where the walker is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Inside the client preface, this many bytes still to skip.
    Preface(usize),
    /// Collecting a frame header.
    Header { buf: [u8; 9], have: usize },
    /// Inside a GOAWAY's payload, collecting its first eight bytes.
    GoAway { buf: [u8; 8], have: usize, rest: usize },
    /// Skipping this many payload bytes.
    Payload(usize),
}

/// Walks one direction of an HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct FrameWalker {
    at: At,
}

impl FrameWalker {
    /// For the client's bytes: the preface comes first.
    pub fn client() -> FrameWalker {
        FrameWalker { at: At::Preface(PREFACE_LEN) }
    }

    /// For the server's bytes: frames from the first byte.
    pub fn server() -> FrameWalker {
        FrameWalker { at: At::Header { buf: [0; 9], have: 0 } }
    }

    /// Feeds the next `bytes`, calling `seen` for each frame start and GOAWAY code.
    pub fn feed(&mut self, mut bytes: &[u8], mut seen: impl FnMut(Seen)) {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Preface(left) => {
                    let n = (*left).min(bytes.len());
                    bytes = &bytes[n..];
                    *left -= n;
                    if *left == 0 {
                        self.at = At::Header { buf: [0; 9], have: 0 };
                    }
                }
                At::Header { buf, have } => {
                    let n = (9 - *have).min(bytes.len());
                    buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *have += n;
                    if *have == 9 {
                        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                        let (kind, flags) = (buf[3], buf[4]);
                        seen(Seen::Frame { kind, flags });
                        self.at = if kind == GOAWAY && len >= 8 {
                            At::GoAway { buf: [0; 8], have: 0, rest: len - 8 }
                        } else {
                            At::Payload(len)
                        };
                        self.after_payload_if_empty();
                    }
                }
                At::GoAway { buf, have, rest } => {
                    let n = (8 - *have).min(bytes.len());
                    buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *have += n;
                    if *have == 8 {
                        seen(Seen::GoAway(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])));
                        self.at = At::Payload(*rest);
                        self.after_payload_if_empty();
                    }
                }
                At::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    bytes = &bytes[n..];
                    *left -= n;
                    self.after_payload_if_empty();
                }
            }
        }
    }

    fn after_payload_if_empty(&mut self) {
        if let At::Payload(0) = self.at {
            self.at = At::Header { buf: [0; 9], have: 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    fn walk(walker: &mut FrameWalker, bytes: &[u8], piece: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        for chunk in bytes.chunks(piece) {
            walker.feed(chunk, |s| seen.push(s));
        }
        seen
    }

    #[test]
    fn frames_and_goaway_codes_are_found_in_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[])); // SETTINGS, empty
        bytes.extend(frame(HEADERS, END_HEADERS, &[0x83; 40]));
        bytes.extend(frame(0x0, 0x1, &[7; 100])); // DATA
        bytes.extend(frame(GOAWAY, 0, &[0, 0, 0, 9, 0, 0, 0, 0xb, b'd', b'e', b'b', b'u', b'g']));
        bytes.extend(frame(0x6, 0, &[1; 8])); // PING
        let want = vec![
            Seen::Frame { kind: 0x4, flags: 0 },
            Seen::Frame { kind: HEADERS, flags: END_HEADERS },
            Seen::Frame { kind: 0x0, flags: 0x1 },
            Seen::Frame { kind: GOAWAY, flags: 0 },
            Seen::GoAway(ENHANCE_YOUR_CALM),
            Seen::Frame { kind: 0x6, flags: 0 },
        ];
        for piece in [1, 2, 5, 9, 13, 64, bytes.len()] {
            assert_eq!(walk(&mut FrameWalker::client(), &bytes, piece), want, "pieces of {piece}");
        }
        // The server side has no preface.
        assert_eq!(walk(&mut FrameWalker::server(), &bytes[PREFACE_LEN..], 3), want);
    }
}
