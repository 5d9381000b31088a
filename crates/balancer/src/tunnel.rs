//! Tunnel settings of a real server forwarded by IP tunnelling (IPVS's `-i`): its
//! encapsulation, GUE's port and the checksum option, named as ipvsadm and keepalived
//! name them. One definition serves the configuration, the control plane and the data
//! plane.

use serde::{Deserialize, Serialize};

/// Encapsulation of a tunnelled real server (`--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP in IP, the default.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (needs `--tun-port`).
    Gue,
    /// GRE.
    Gre,
}

impl TunnelType {
    /// Every encapsulation IPVS has.
    pub const ALL: [Self; 3] = [Self::Ipip, Self::Gue, Self::Gre];

    /// The encapsulation named `name` (as ipvsadm and keepalived name them).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The name ipvsadm uses.
    pub fn name(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipip",
            TunnelType::Gue => "gue",
            TunnelType::Gre => "gre",
        }
    }
}

/// Checksum option of GUE/GRE tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelChecksum {
    /// `--tun-nocsum`, the default.
    #[default]
    NoCsum,
    /// `--tun-csum`.
    Csum,
    /// `--tun-remcsum`.
    RemCsum,
}

impl TunnelChecksum {
    /// The short form of `--tun-info` listings.
    pub fn short(self) -> &'static str {
        match self {
            TunnelChecksum::NoCsum => "-c",
            TunnelChecksum::Csum => "+c",
            TunnelChecksum::RemCsum => "r+c",
        }
    }

    /// The option `-S` writes.
    pub fn option(self) -> &'static str {
        match self {
            TunnelChecksum::NoCsum => "--tun-nocsum",
            TunnelChecksum::Csum => "--tun-csum",
            TunnelChecksum::RemCsum => "--tun-remcsum",
        }
    }
}

/// Tunnel settings of a real server; ipvsadm always sends them, with these defaults
/// (keepalived's are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Tunnel {
    /// Encapsulation.
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// Destination port for GUE (0 = none).
    pub port: u16,
    /// Checksum option.
    pub checksum: TunnelChecksum,
}
