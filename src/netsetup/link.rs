//! The netlink side of [`super`]: find or create the link, bring it up, add and remove
//! addresses. Every step is idempotent: "already there" (`EEXIST`) counts as done, so a
//! restarted or second process runs the same steps without harm.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkFlags;
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

/// `EEXIST`: the link or address is already there.
const EEXIST: i32 = libc::EEXIST;
/// `EOPNOTSUPP`: the kernel has no driver for the link kind asked (no `dummy` module).
const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;

/// What a failed netlink request means to the caller.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the kernel has no dummy link driver (EOPNOTSUPP)")]
    NoDummyDriver,
    #[error("no link named `{0}`")]
    NoSuchLink(String),
    #[error("{0}")]
    Netlink(#[from] rtnetlink::Error),
}

/// The positive errno of a netlink error reply, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// The index and up-flag of link `name`, or `None` when there is no such link.
pub async fn find(handle: &Handle, name: &str) -> Result<Option<(u32, bool)>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some((
            link.header.index,
            link.header.flags.contains(LinkFlags::Up),
        ))),
        Ok(None) => Ok(None),
        // ENODEV: the kernel answers a by-name lookup of a missing link with an error.
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates dummy link `name`, up. An existing link of that name is success.
pub async fn add_dummy(handle: &Handle, name: &str) -> Result<(), LinkError> {
    match handle
        .link()
        .add(LinkDummy::new(name).up().build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) if errno(&e) == Some(EOPNOTSUPP) => Err(LinkError::NoDummyDriver),
        Err(e) => Err(e.into()),
    }
}

/// Sets link `index` up.
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(())
}

/// Deletes link `index`.
pub async fn delete(handle: &Handle, index: u32) -> Result<(), LinkError> {
    handle.link().del(index).execute().await?;
    Ok(())
}

/// The addresses link `index` carries.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpAddr>, LinkError> {
    let mut found = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream.try_next().await? {
        found.extend(msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        }));
    }
    Ok(found)
}

/// Adds `ip` as a host address (/32 or /128) on link `index`; already present is success.
pub async fn add_address(handle: &Handle, index: u32, ip: IpAddr) -> Result<(), LinkError> {
    let mut req = handle.address().add(index, ip, host_prefix(ip));
    if ip.is_ipv6() {
        // No duplicate address detection: a tentative address cannot source replies, and
        // a link-local service address is meant to exist on every node at once.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `ip` from link `index`; an address already gone is success.
pub async fn remove_address(handle: &Handle, index: u32, ip: IpAddr) -> Result<(), LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(ip)
        .execute();
    while let Some(msg) = stream.try_next().await? {
        handle.address().del(msg).execute().await?;
    }
    Ok(())
}

/// The prefix length of a single host: /32 for IPv4, /128 for IPv6.
pub fn host_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
