//! [`Ipvs`]: the kernel's IPVS table over generic netlink, with calls named after ipvsadm's.

use netlink_packet_core::{NLM_F_DUMP, NetlinkMessage};
use netlink_packet_generic::GenlMessage;

use super::{
    IpvsError, IpvsTable, Op,
    message::{IpvsCmd, IpvsMessage},
    nla::{InfoAttr, IpvsAttr},
    types::{Destination, Info, Service, ServiceKey, Timeouts},
};
use crate::{
    netlink::{NETLINK_GENERIC, NetlinkSocket},
    netns::Netns,
};

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

/// One connection to the IPVS family of a network namespace: a socket and the family's id.
/// Open one per sync (a socket kept for ever would pin a namespace a test wants to delete).
pub struct Ipvs {
    socket: NetlinkSocket,
    family: u16,
}

impl Ipvs {
    /// Connects in `netns`. [`IpvsError::Unavailable`] when the kernel has no IPVS (module
    /// `ip_vs` not loaded and not loadable).
    pub fn open(netns: &Netns) -> Result<Self, IpvsError> {
        let mut socket = NetlinkSocket::open(NETLINK_GENERIC, netns)?;
        let family = socket.resolve_family("IPVS").map_err(|e| {
            if e.is_not_found() {
                IpvsError::Unavailable
            } else {
                e.into()
            }
        })?;
        Ok(Self { socket, family })
    }

    fn msg(&self, cmd: IpvsCmd, attrs: Vec<IpvsAttr>, flags: u16) -> Msg {
        IpvsMessage::new(cmd, attrs).into_netlink(self.family, flags)
    }

    fn call(
        &mut self,
        op: &'static str,
        cmd: IpvsCmd,
        attrs: Vec<IpvsAttr>,
    ) -> Result<(), IpvsError> {
        let msg = self.msg(cmd, attrs, 0);
        Ok(self.socket.request(op, msg, drop)?)
    }

    fn dump(
        &mut self,
        op: &'static str,
        cmd: IpvsCmd,
        attrs: Vec<IpvsAttr>,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        let msg = self.msg(cmd, attrs, NLM_F_DUMP);
        let mut out = Vec::new();
        self.socket.request(op, msg, |m| out.push(m.payload))?;
        Ok(out)
    }

    /// `ipvsadm -A`.
    pub fn add_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        let attrs = vec![IpvsAttr::Service(svc.to_attrs(true))];
        self.call("add service", IpvsCmd::NewService, attrs)
    }

    /// `ipvsadm -E`: scheduler, flags and persistence of an existing service.
    pub fn edit_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        let attrs = vec![IpvsAttr::Service(svc.to_attrs(true))];
        self.call("edit service", IpvsCmd::SetService, attrs)
    }

    /// `ipvsadm -D`.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        let attrs = vec![IpvsAttr::Service(key.to_attrs())];
        self.call("delete service", IpvsCmd::DelService, attrs)
    }

    /// `ipvsadm -a`.
    pub fn add_server(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), IpvsError> {
        self.call("add server", IpvsCmd::NewDest, dest_attrs(key, dest))
    }

    /// `ipvsadm -e`: weight and thresholds of an existing real server.
    pub fn edit_server(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), IpvsError> {
        self.call("edit server", IpvsCmd::SetDest, dest_attrs(key, dest))
    }

    /// `ipvsadm -d`.
    pub fn delete_server(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), IpvsError> {
        self.call("delete server", IpvsCmd::DelDest, dest_attrs(key, dest))
    }

    /// `ipvsadm -C`: every service, everyone's. Never used by kproxy on a node (it owns only
    /// its own services); for tests and the benchmark's baseline.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.call("flush", IpvsCmd::Flush, Vec::new())
    }

    /// `ipvsadm --set TCP TCPFIN UDP`.
    pub fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), IpvsError> {
        let attrs = vec![
            IpvsAttr::TimeoutTcp(t.tcp),
            IpvsAttr::TimeoutTcpFin(t.tcp_fin),
            IpvsAttr::TimeoutUdp(t.udp),
        ];
        self.call("set timeouts", IpvsCmd::SetConfig, attrs)
    }

    /// `ipvsadm -L --timeout`.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let mut t = Timeouts::default();
        let msg = self.msg(IpvsCmd::GetConfig, Vec::new(), 0);
        self.socket.request("get timeouts", msg, |m| {
            for a in m.payload.attrs {
                match a {
                    IpvsAttr::TimeoutTcp(v) => t.tcp = v,
                    IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = v,
                    IpvsAttr::TimeoutUdp(v) => t.udp = v,
                    _ => {}
                }
            }
        })?;
        Ok(t)
    }

    /// The kernel's IPVS version and connection table size.
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let mut info = Info::default();
        let msg = self.msg(IpvsCmd::GetInfo, Vec::new(), 0);
        self.socket.request("get info", msg, |m| {
            for a in m.payload.info {
                match a {
                    InfoAttr::Version(v) => info.version = v,
                    InfoAttr::ConnTableSize(v) => info.conn_table_size = v,
                    _ => {}
                }
            }
        })?;
        Ok(info)
    }

    /// `ipvsadm -L --daemon`: each sync daemon's attributes.
    pub fn daemons(&mut self) -> Result<Vec<IpvsMessage>, IpvsError> {
        self.dump("list daemons", IpvsCmd::GetDaemon, Vec::new())
    }
}

impl IpvsTable for Ipvs {
    /// `ipvsadm -Ln` without the servers: every virtual service, everyone's.
    fn list_services(&mut self) -> Result<Vec<Service>, IpvsError> {
        let answers = self.dump("list services", IpvsCmd::GetService, Vec::new())?;
        let nests = answers.into_iter().flat_map(|m| m.attrs);
        Ok(nests
            .filter_map(|a| match a {
                IpvsAttr::Service(s) => Service::from_attrs(&s.attrs),
                _ => None,
            })
            .collect())
    }

    /// The real servers of one service (`ipvsadm -Ln -t ADDR:PORT`).
    fn list_servers(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        let attrs = vec![IpvsAttr::Service(key.to_attrs())];
        let answers = self.dump("list servers", IpvsCmd::GetDest, attrs)?;
        let nests = answers.into_iter().flat_map(|m| m.attrs);
        Ok(nests
            .filter_map(|a| match a {
                IpvsAttr::Dest(d) => Destination::from_attrs(&d.attrs, key.address),
                _ => None,
            })
            .collect())
    }

    /// Runs `ops` in order, pipelined (see [`NetlinkSocket::request_batch`]): each op's outcome.
    fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        let msgs: Vec<Msg> = ops.iter().map(|op| self.op_msg(op)).collect();
        self.socket
            .request_batch("apply ipvs changes", msgs)
            .into_iter()
            .map(|r| r.map_err(IpvsError::from))
            .collect()
    }
}

impl Ipvs {
    fn op_msg(&self, op: &Op) -> Msg {
        let (cmd, attrs) = match op {
            Op::AddService(s) => (
                IpvsCmd::NewService,
                vec![IpvsAttr::Service(s.to_attrs(true))],
            ),
            Op::EditService(s) => (
                IpvsCmd::SetService,
                vec![IpvsAttr::Service(s.to_attrs(true))],
            ),
            Op::DeleteService(k) => (IpvsCmd::DelService, vec![IpvsAttr::Service(k.to_attrs())]),
            Op::AddServer(k, d) => (IpvsCmd::NewDest, dest_attrs(k, d)),
            Op::EditServer(k, d) => (IpvsCmd::SetDest, dest_attrs(k, d)),
            Op::DeleteServer(k, d) => (IpvsCmd::DelDest, dest_attrs(k, d)),
        };
        self.msg(cmd, attrs, 0)
    }
}

fn dest_attrs(key: &ServiceKey, dest: &Destination) -> Vec<IpvsAttr> {
    vec![
        IpvsAttr::Service(key.to_attrs()),
        IpvsAttr::Dest(dest.to_attrs()),
    ]
}
