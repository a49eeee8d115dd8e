import NIOCore
import SallyportAuth
import SallyportPolicy
import SallyportRelay

/// A session's share of its user's usage: reported on the keeper's tick, and the allowance its
/// relay spends when a quota applies.
extension Session {
    /// The keeper's tick: report the bytes so far, and close the session when its user has used
    /// up a quota. Call on the session's event loop.
    func usageTick(quotas: [Quota]) {
        guard !state.isOver, identity.user != nil else { return }
        usage.account(bytesSoFar, of: identity, in: services.usage)
        // Relaying or associated: only a running session is closed for a quota here.
        guard !quotas.isEmpty, !state.isNegotiating, let quota = overQuota(quotas) else { return }
        close(.quota(quota))
    }

    /// The quota the session's user has used up, logged; nil when none.
    func overQuota(_ quotas: [Quota]? = nil) -> Quota? {
        SessionUsage.exceeded(quotas, subject: subject, services: services, record: record)
    }

    /// The allowance a session of a user with a quota relays under; nil when no quota applies.
    func makeAllowance() -> ByteAllowance? {
        guard SessionUsage.needsAllowance(identity, services: services), let ledger = services.usage else { return nil }
        let (quotas, subject) = (services.quotas, subject)
        return ByteAllowance(lease: SessionUsage.lease) { [weak self] in
            guard let self, !state.isOver else { return 0 }
            // What this session moved so far goes into the ledger first: every session's
            // unreported bytes stay within its current lease.
            usage.account(bytesSoFar, of: identity, in: ledger)
            let left = ledger.remaining(subject, quotas: quotas)
            if left == 0 {
                // Used up: the session ends, after the read that spent it is passed on.
                if let quota = overQuota(quotas) { decide(.quota(quota)) }
                channel?.eventLoop.assumeIsolated().execute { [self] in closeForShutdown() }
            }
            return Int(min(left, UInt64(SessionUsage.lease)))
        }
    }
}
