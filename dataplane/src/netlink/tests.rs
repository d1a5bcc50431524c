//! The socket helper without a kernel (message splitting, answer endings, request bytes written
//! out by hand from include/uapi/linux/netlink.h and genetlink.h), and against the kernel's
//! generic netlink controller, which every kernel has.

use netlink_packet_generic::{GenlMessage, ctrl::GenlCtrl};
use nix::sys::socket::getsockopt;

use super::{genl::get_family_request, *};

/// A netlink message: 16-byte header (length, type, flags, seq, port 0), then the payload.
fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_le_bytes().to_vec();
    v.extend(ty.to_le_bytes());
    v.extend(flags.to_le_bytes());
    v.extend(seq.to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(payload);
    v
}

/// NLMSG_ERROR with `code` (0: an ack), then the header of the request it answers.
fn error(seq: u32, code: i32) -> Vec<u8> {
    msg(2, 0, seq, &[&code.to_le_bytes()[..], &[0; 16]].concat())
}

fn done(seq: u32, code: i32) -> Vec<u8> {
    msg(3, 2, seq, &code.to_le_bytes())
}

#[test]
fn a_socket_waits_for_the_kernel_a_bounded_time() {
    let socket = open(NETLINK_ROUTE).expect("a NETLINK_ROUTE socket");
    let timeout = getsockopt(&socket, ReceiveTimeout).expect("SO_RCVTIMEO");
    assert_eq!(timeout, TimeVal::new(RECV_TIMEOUT_SECS, 0));
    let timed_out = recv_error("dump", Errno::EAGAIN.into());
    assert_eq!(
        timed_out.to_string(),
        "dump: no answer from the kernel within 10 s"
    );
    let other = recv_error("dump", Errno::EPERM.into());
    assert_eq!(other.errno(), Some(Errno::EPERM as i32));
}

#[test]
fn a_datagram_splits_into_its_messages_padding_and_all() {
    // A 21-byte message is padded to 24 before the next one; the last may lack its padding.
    let mut first = msg(0x10, 0, 7, &[1, 2, 3, 4, 5]);
    first.resize(24, 0);
    let batch = [first, done(8, 0)].concat();
    let split = split_messages(&batch).unwrap();
    let seqs: Vec<_> = split.iter().map(|(s, b)| (*s, b.len())).collect();
    assert_eq!(seqs, [(7, 21), (8, 20)]);

    let mut short = done(1, 0);
    short[0] = 8; // shorter than the 16-byte header
    assert!(split_messages(&short).is_err());
    let mut long = done(1, 0);
    long[0] = 200; // longer than the datagram
    assert!(split_messages(&long).is_err());
}

#[test]
fn an_answer_ends_with_an_ack_a_done_or_an_errno() {
    type Ctrl = GenlMessage<GenlCtrl>;
    let mut seen = 0;
    let mut visit = |_: Ctrl| seen += 1;
    assert!(matches!(
        answer("t", &error(1, 0), &mut visit),
        Some(Ok(()))
    ));
    assert!(matches!(answer("t", &done(1, 0), &mut visit), Some(Ok(()))));
    let failed = answer("t", &error(1, -17), &mut visit)
        .unwrap()
        .unwrap_err();
    assert!(failed.is_exists(), "{failed}");
    let dump_failed = answer("t", &done(1, -4), &mut visit).unwrap().unwrap_err();
    assert_eq!(dump_failed.errno(), Some(Errno::EINTR as i32));
    assert_eq!(seen, 0, "no message of the family was passed on");
}

#[test]
fn a_get_family_request_is_ctrl_cmd_getfamily_by_name() {
    let mut request = get_family_request("IPVS");
    request.header.sequence_number = 5;
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    // genlmsghdr: cmd 3 (CTRL_CMD_GETFAMILY), version 2; CTRL_ATTR_FAMILY_NAME (2) "IPVS\0".
    let payload = [&[3, 2, 0, 0][..], &[9, 0, 2, 0], b"IPVS\0", &[0, 0, 0]].concat();
    assert_eq!(bytes, msg(0x10, 0, 5, &payload), "type GENL_ID_CTRL");
}

#[test]
fn the_controller_resolves_itself_and_refuses_an_unknown_family() {
    let mut socket = NetlinkSocket::open(NETLINK_GENERIC, &Netns::current()).unwrap();
    assert_eq!(socket.resolve_family("nlctrl").unwrap(), 0x10);
    // (A name longer than GENL_NAMSIZ - 1 = 15 bytes would be EINVAL instead.)
    let err = socket.resolve_family("kproxy-nonesuch").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // The socket stays usable after an error answer: the next request has its own number.
    assert_eq!(socket.resolve_family("nlctrl").unwrap(), 0x10);
}
