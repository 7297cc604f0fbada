//! Answers that hide an outage: Consul 1.8 answers a read its token may no longer make with
//! `200 []`, not 403, so an answer that empties a service may be a denial in disguise
//! ([`confirm_empty`]). (How a failing loop backs off and logs is [`crate::query::Retry`].)

/// Whether an answer that leaves a service with no instance, where it had some (`had`), is to be
/// believed. Consul 1.8 answers a read its token may no longer make with `200 []`, not 403 (a
/// permission taken away while the watcher runs, ACLs turned on under it): publishing that would
/// drop the service's every route, where a denial must keep the last known instances. So such an
/// answer is checked against the catalog ([`consul::Client::check_readable`]: two non-blocking
/// reads, on this rare change only).
///
/// # Errors
/// The denial ([`consul::Error::Filtered`]), or whatever made the check fail: the caller keeps the
/// last set and retries as after a failed read.
pub async fn confirm_empty(
    client: &consul::Client,
    had: bool,
    read: consul::QueryResult,
) -> Result<consul::QueryResult, consul::Error> {
    if had && read.instances.is_empty() {
        client.check_readable().await?;
    }
    Ok(read)
}
