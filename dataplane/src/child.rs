//! Running a kernel tool (`nft`, `iptables-restore`) that reads its program on standard input.

use std::{
    io::{self, Write},
    process::{Child, ChildStdin, Output},
};

/// Feeds `write` to the child's standard input from another thread while this one collects its
/// output: a tool may report errors before it has read all of a large input, and a full stderr
/// pipe would deadlock a single thread. `None` writes nothing (stdin is closed at once).
pub(crate) fn feed_and_wait(
    mut child: Child,
    write: Option<impl FnOnce(&mut dyn Write) -> io::Result<()> + Send>,
) -> io::Result<Output> {
    let input: Option<ChildStdin> = child.stdin.take();
    std::thread::scope(|s| {
        let writer = input.zip(write).map(|(input, write)| {
            s.spawn(move || {
                let mut w = io::BufWriter::new(input);
                write(&mut w)?;
                w.flush()
            })
        });
        let out = child.wait_with_output();
        if let Some(w) = writer {
            // A write error (the tool exited early) is explained by its status and stderr.
            let _ = w.join();
        }
        out
    })
}
