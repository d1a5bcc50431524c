use std::os::fd::AsRawFd;

use super::*;

/// The pipe gets the size asked for (root, or at most fs.pipe-max-size); a refused size leaves
/// a working pipe of the default size.
#[test]
fn a_pipe_has_the_capacity_asked_for_or_its_default() {
    let p = Pipe::new(DEFAULT_PIPE_SIZE).unwrap();
    assert!(p.capacity() >= 64 * 1024, "{}", p.capacity());
    let huge = Pipe::new(1 << 30).unwrap();
    assert!(huge.capacity() >= 4096);
}

/// A socket made in the current namespace is a non-blocking socket of the family asked for.
#[test]
fn socket_in_the_current_namespace_is_nonblocking() {
    let fd = socket_in(&Netns::current(), true, SockType::Stream).unwrap();
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_ne!(flags & nix::libc::O_NONBLOCK, 0);
    assert!(fd.as_raw_fd() >= 0);
    // A socket that was never NATed has no original destination.
    assert!(original_dst(&fd, true).is_err());
}
