//! Generic netlink: a family (IPVS, say) has no fixed message type; the kernel's controller
//! (`nlctrl`) hands out its number at run time, which [`NetlinkSocket::resolve_family`] asks for.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::{
    GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};

use super::{NetlinkError, NetlinkSocket};

/// CTRL_CMD_GETFAMILY for family `name` (NLM_F_REQUEST is set when it is sent).
pub fn get_family_request(name: &str) -> NetlinkMessage<GenlMessage<GenlCtrl>> {
    let ctrl = GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    };
    let payload = NetlinkPayload::from(GenlMessage::from_payload(ctrl));
    NetlinkMessage::new(NetlinkHeader::default(), payload)
}

/// The family id in a CTRL_CMD_NEWFAMILY answer.
fn family_id(answer: &GenlMessage<GenlCtrl>) -> Option<u16> {
    answer.payload.nlas.iter().find_map(|nla| match nla {
        GenlCtrlAttrs::FamilyId(id) => Some(*id),
        _ => None,
    })
}

impl NetlinkSocket {
    /// The message type of generic netlink family `name` (such as `"IPVS"`) in this socket's
    /// namespace. A family the kernel does not know (its module is not loaded) is ENOENT:
    /// [`NetlinkError::is_not_found`].
    pub fn resolve_family(&mut self, name: &str) -> Result<u16, NetlinkError> {
        let mut id = None;
        self.request(
            "resolve generic netlink family",
            get_family_request(name),
            |a| id = id.or(family_id(&a)),
        )?;
        id.ok_or_else(|| NetlinkError::Decode {
            op: "resolve generic netlink family",
            message: format!("no family id for {name:?} in the kernel's answer"),
        })
    }
}
