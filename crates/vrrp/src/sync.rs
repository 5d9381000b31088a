//! A `vrrp_sync_group`'s coordinator, as keepalived's `vrrp_sync.c`: the members of a
//! group change state together.
//!
//! Sans-I/O: [`SyncGroup::report`] takes what one member's driver reports (its state and
//! whether it waits for the group to let it become Master) and returns the
//! [`SyncCommand`]s for the members and the group's notifications. The rules:
//!
//! - FAULT spreads: while a member is in FAULT on its own, the others are forced into
//!   FAULT (through their tracking); when it recovers, they are released.
//! - BACKUP spreads: a master that goes to BACKUP takes the other masters with it
//!   (keepalived's `vrrp_sync_backup`).
//! - MASTER needs everyone (keepalived's `vrrp_sync_can_goto_master`): a member whose
//!   Master_Down timer expires waits in Backup ([`crate::InstanceConfig::sync_group`]) until
//!   every other member is Master or waiting too; then all waiting members are told to
//!   become Master (`vrrp_sync_master`). So a group whose members' priorities differ
//!   between directors never splits across them: a member that could preempt on its own
//!   stays Backup while another member is held by a better master.
//! - Lower-priority gratuitous ARPs spread (keepalived's `vrrp_state_master_rx`): when a
//!   master member receives a lower-priority advertisement, every other member is told
//!   to send its own `garp_lower_prio_repeat` burst ([`SyncGroup::lower_priority_received`];
//!   the members that are not Master ignore it).
//! - The group's state: FAULT if a member is in FAULT, MASTER when all are, BACKUP when
//!   all run and one is BACKUP, stopped (INIT) when all are; unchanged in between. Each
//!   change is one [`SyncCommand::GroupState`] (the group's notify scripts).

use crate::event::State;
use crate::instance::{InitialState, InstanceConfig};

/// What the coordinator asks of a member (by index, in the order the members were
/// given), or tells about the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncCommand {
    /// Force the member into FAULT (`true`) or release it (`false`).
    ForceFault { member: usize, fault: bool },
    /// The member leaves MASTER for BACKUP ([`crate::Event::SyncBackup`]).
    Backup { member: usize },
    /// The member, waiting in BACKUP, becomes MASTER ([`crate::Event::SyncMaster`]).
    Master { member: usize },
    /// The member, if Master, sends its lower-priority gratuitous ARP / NA burst
    /// ([`crate::Event::SyncLowerPriorityGarp`]).
    LowerPriorityGarp { member: usize },
    /// The group's state changed.
    GroupState(State),
}

#[derive(Clone, Debug)]
struct Member {
    name: String,
    state: State,
    wants_master: bool,
    /// The group forces it into FAULT.
    forced: bool,
    /// Its forced FAULT was just lifted: its FAULT state is stale until it reports again.
    pending: bool,
    /// Told to become Master and has not reported since.
    asked_master: bool,
}

/// One sync group's members as the coordinator last heard them.
#[derive(Clone, Debug)]
pub struct SyncGroup {
    name: String,
    members: Vec<Member>,
    state: State,
}

impl SyncGroup {
    /// A group of `members` (instance names), all still in Initialize.
    pub fn new<I, S>(name: impl Into<String>, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SyncGroup {
            name: name.into(),
            members: members
                .into_iter()
                .map(|name| Member {
                    name: name.into(),
                    state: State::Initialize,
                    wants_master: false,
                    forced: false,
                    pending: false,
                    asked_master: false,
                })
                .collect(),
            state: State::Initialize,
        }
    }

    /// A group whose members are all address owners with `state MASTER`
    /// ([`is_group_of_owners`]): keepalived starts it in MASTER
    /// (`vrrp_sync_set_group`), so its members becoming Master at startup change nothing
    /// and notify nothing for the group (its next notification is the first real
    /// change, e.g. STOP).
    pub fn starting_master(mut self) -> Self {
        self.state = State::Master;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's state (Initialize until its members first agree, or Master for a
    /// group [`SyncGroup::starting_master`]).
    pub fn state(&self) -> State {
        self.state
    }

    /// The name of member `member`.
    pub fn member_name(&self, member: usize) -> Option<&str> {
        self.members.get(member).map(|m| m.name.as_str())
    }

    /// Member `member` is in `state` and (if Backup) does or does not wait to become
    /// Master; returns what the members must do, in order. Reports for unknown members
    /// are ignored.
    pub fn report(&mut self, member: usize, state: State, wants_master: bool) -> Vec<SyncCommand> {
        let mut out = Vec::new();
        let Some(m) = self.members.get_mut(member) else {
            return out;
        };
        let previous = std::mem::replace(&mut m.state, state);
        m.wants_master = wants_master && state == State::Backup;
        m.pending = false;
        if previous != state || !m.wants_master {
            m.asked_master = false;
        }
        if previous == State::Master && state == State::Backup {
            for (j, other) in self.members.iter().enumerate() {
                if j != member && other.state == State::Master {
                    tracing::info!(
                        "vrrp_sync_group {}: {} follows to BACKUP",
                        self.name,
                        other.name
                    );
                    out.push(SyncCommand::Backup { member: j });
                }
            }
        }
        let stopping = self.members.iter().any(|m| m.state == State::Initialize);
        self.force_faults(stopping, &mut out);
        if !stopping {
            self.sync_master(&mut out);
        }
        if let Some(to) = self.derived_state()
            && to != self.state
        {
            tracing::info!("vrrp_sync_group {}: {} -> {to}", self.name, self.state);
            self.state = to;
            out.push(SyncCommand::GroupState(to));
        }
        out
    }

    /// What member `member` reports after an event: [`SyncGroup::report`], and, when as
    /// master it received a lower-priority advertisement, [`SyncGroup::lower_priority_received`].
    pub fn member_report(
        &mut self,
        member: usize,
        state: State,
        wants_master: bool,
        lower_priority_received: bool,
    ) -> Vec<SyncCommand> {
        let mut commands = self.report(member, state, wants_master);
        if lower_priority_received {
            commands.extend(self.lower_priority_received(member));
        }
        commands
    }

    /// Member `member`, as master, received a lower-priority advertisement (and sent its
    /// own lower-priority burst): every other member is to send its burst too, as
    /// keepalived does for the group of the instance that received it.
    pub fn lower_priority_received(&self, member: usize) -> Vec<SyncCommand> {
        if member >= self.members.len() {
            return Vec::new();
        }
        (0..self.members.len())
            .filter(|&j| j != member)
            .map(|j| SyncCommand::LowerPriorityGarp { member: j })
            .collect()
    }

    /// Forces every member into FAULT while one is in FAULT on its own (none while the
    /// group stops).
    fn force_faults(&mut self, stopping: bool, out: &mut Vec<SyncCommand>) {
        let own_fault =
            |m: &Member| m.state == State::Fault && !m.forced && !m.pending && !stopping;
        let any = self.members.iter().any(own_fault);
        let force: Vec<bool> = self.members.iter().map(|m| any && !own_fault(m)).collect();
        for (j, (m, force)) in self.members.iter_mut().zip(force).enumerate() {
            if m.forced == force {
                continue;
            }
            if force {
                tracing::info!("vrrp_sync_group {}: forcing {} to FAULT", self.name, m.name);
            } else {
                tracing::info!(
                    "vrrp_sync_group {}: {} leaves the group FAULT",
                    self.name,
                    m.name
                );
                m.pending = true;
            }
            m.forced = force;
            out.push(SyncCommand::ForceFault {
                member: j,
                fault: force,
            });
        }
    }

    /// When every member is Master or waiting for the group, the waiting ones go.
    fn sync_master(&mut self, out: &mut Vec<SyncCommand>) {
        let all_want = self
            .members
            .iter()
            .all(|m| m.state == State::Master || m.wants_master);
        if !all_want || self.members.iter().any(|m| m.forced || m.pending) {
            return;
        }
        let mut first = true;
        for (j, m) in self.members.iter_mut().enumerate() {
            if m.wants_master && !m.asked_master {
                if first {
                    tracing::info!(
                        "vrrp_sync_group {}: every member can be MASTER; syncing to MASTER",
                        self.name
                    );
                    first = false;
                }
                m.asked_master = true;
                out.push(SyncCommand::Master { member: j });
            }
        }
    }

    fn derived_state(&self) -> Option<State> {
        let all = |f: fn(State) -> bool| self.members.iter().all(|m| f(m.state));
        if self.members.iter().any(|m| m.state == State::Fault) {
            Some(State::Fault)
        } else if all(|s| s == State::Master) {
            Some(State::Master)
        } else if all(|s| matches!(s, State::Master | State::Backup)) {
            Some(State::Backup)
        } else if all(|s| s == State::Initialize) {
            Some(State::Initialize)
        } else {
            None
        }
    }
}

/// Whether a sync group of members configured so is a group of owners, which keepalived
/// starts in MASTER ([`SyncGroup::starting_master`]): every member an address owner with
/// `state MASTER` ([`InstanceConfig::sync_group_owners`] then tells each).
pub fn is_group_of_owners<'a>(members: impl IntoIterator<Item = &'a InstanceConfig>) -> bool {
    members
        .into_iter()
        .all(|c| c.is_owner() && c.initial_state == InitialState::Master)
}
