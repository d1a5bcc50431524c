//! The IPVS generic netlink message: a command and its attributes, what
//! `GenlMessage<IpvsMessage>` carries (`netlink-packet-generic` adds the headers).

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use super::nla::{InfoAttr, IpvsAttr};

/// The family's name for the controller, and the version ipvsadm and the kernel speak.
const FAMILY: &str = "IPVS";
const VERSION: u8 = 1;

/// IPVS_CMD_*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    /// Only the kernel's answer to [`IpvsCmd::GetInfo`].
    SetInfo,
    GetInfo,
    Zero,
    Flush,
    Other(u8),
}

const CMDS: [IpvsCmd; 17] = [
    IpvsCmd::NewService,
    IpvsCmd::SetService,
    IpvsCmd::DelService,
    IpvsCmd::GetService,
    IpvsCmd::NewDest,
    IpvsCmd::SetDest,
    IpvsCmd::DelDest,
    IpvsCmd::GetDest,
    IpvsCmd::NewDaemon,
    IpvsCmd::DelDaemon,
    IpvsCmd::GetDaemon,
    IpvsCmd::SetConfig,
    IpvsCmd::GetConfig,
    IpvsCmd::SetInfo,
    IpvsCmd::GetInfo,
    IpvsCmd::Zero,
    IpvsCmd::Flush,
];

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> u8 {
        match cmd {
            IpvsCmd::Other(n) => n,
            // The commands are numbered from 1 in CMDS' order.
            known => CMDS.iter().position(|c| *c == known).expect("listed") as u8 + 1,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(n: u8) -> Self {
        match n {
            1..=17 => CMDS[usize::from(n) - 1],
            other => IpvsCmd::Other(other),
        }
    }
}

/// One IPVS message: its command and top-level attributes. The answer to
/// [`IpvsCmd::GetInfo`] ([`IpvsCmd::SetInfo`]) has info attributes instead, whose numbers
/// overlap the others': they are in `info`, and `attrs` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<IpvsAttr>,
    pub info: Vec<InfoAttr>,
}

impl IpvsMessage {
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        Self {
            cmd,
            attrs,
            info: Vec::new(),
        }
    }

    /// The whole netlink message for family id `family` with header `flags` (NLM_F_REQUEST
    /// and NLM_F_ACK are the socket's to add), its length filled in.
    pub fn into_netlink(self, family: u16, flags: u16) -> NetlinkMessage<GenlMessage<Self>> {
        let mut genl = GenlMessage::from_payload(self);
        genl.set_resolved_family_id(family);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
        msg.finalize();
        msg
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len() + self.info.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        let n = self.attrs.as_slice().buffer_len();
        self.attrs.as_slice().emit(&mut buffer[..n]);
        self.info.as_slice().emit(&mut buffer[n..]);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let mut msg = IpvsMessage::new(cmd, Vec::new());
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            if cmd == IpvsCmd::SetInfo {
                msg.info.push(InfoAttr::parse(&nla)?);
            } else {
                msg.attrs.push(IpvsAttr::parse(&nla)?);
            }
        }
        Ok(msg)
    }
}
