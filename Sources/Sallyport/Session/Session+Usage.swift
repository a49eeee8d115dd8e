import Logging
import SallyportRelay

/// Each user's bytes into the usage ledger as the session goes, and the quotas judged against them.
extension Session {
    /// Gives the ledger what was relayed since the last call (`counters`: so far, or the final).
    func account(_ counters: RelayCounters) {
        // Counters only grow; a smaller reading is one taken before the last.
        guard let user = identity.user, let usage = services.usage, counters.clientToTarget >= accounted.clientToTarget,
            counters.targetToClient >= accounted.targetToClient
        else { return }
        usage.add(
            user, groups: identity.groups, up: counters.clientToTarget - accounted.clientToTarget,
            down: counters.targetToClient - accounted.targetToClient)
        accounted = counters
    }

    /// The keeper's tick: report the bytes so far, and close the session when its user has used
    /// up a quota. Call on the session's event loop.
    func usageTick(quotas: [Quota]) {
        guard !finished, identity.user != nil else { return }
        account(bytesSoFar)
        guard !quotas.isEmpty, phase == .relaying || phase == .associated, let quota = overQuota(quotas) else { return }
        decide(.quota(quota))
        closeForShutdown()
    }

    /// The quota the session's user has used up, logged; nil when none.
    func overQuota(_ quotas: [Quota]? = nil) -> Quota? {
        guard let quota = services.usage?.exceeded(subject, quotas: quotas ?? services.quotas) else { return nil }
        services.logger.notice(
            "quota used up", metadata: ["session": "\(record.idText)", "user": "\(identity.user ?? "-")", "quota": "\(quota.label)"])
        return quota
    }

    /// Bytes a session takes from its user's quota at a time: the most a quota is overshot per
    /// session (with one read of at most as much, and the receive queue read at a peer's EOF).
    static let quotaLease = 64 * 1024

    /// The allowance a session of a user with a quota relays under; nil when no quota applies.
    func makeAllowance() -> ByteAllowance? {
        let quotas = services.quotas
        let subject = self.subject
        guard let usage = services.usage, identity.user != nil, quotas.contains(where: { $0.applies(to: subject) }) else { return nil }
        return ByteAllowance(lease: Self.quotaLease) { [weak self] in
            guard let self, !finished else { return 0 }
            // What this session moved so far goes into the ledger first: every session's
            // unreported bytes stay within its current lease.
            account(bytesSoFar)
            let left = usage.remaining(subject, quotas: quotas)
            if left == 0 { quotaUsedUp(quotas) }
            return Int(min(left, UInt64(Self.quotaLease)))
        }
    }

    /// The allowance ran out: the session ends (after the read that spent it is passed on).
    private func quotaUsedUp(_ quotas: [Quota]) {
        guard !finished else { return }
        if let quota = overQuota(quotas) { decide(.quota(quota)) }
        channel?.eventLoop.assumeIsolated().execute { [self] in closeForShutdown() }
    }
}
