import Logging
import SallyportAuth
import SallyportPolicy
import SallyportRelay

/// A session's bytes into its user's usage ledger as it goes, and the quotas judged against them.
struct SessionUsage {
    /// Bytes a session takes from its user's quota at a time: the most a quota is overshot per
    /// session (with one read of at most as much, and the receive queue read at a peer's EOF).
    static let lease = 64 * 1024

    /// The bytes already given to the ledger.
    private var accounted = RelayCounters()

    /// Gives the ledger what was relayed since the last call (`counters`: so far, or the final).
    mutating func account(_ counters: RelayCounters, of identity: Identity, in ledger: UsageLedger?) {
        // Counters only grow; a smaller reading is one taken before the last.
        guard let user = identity.user, let ledger, counters.clientToTarget >= accounted.clientToTarget,
            counters.targetToClient >= accounted.targetToClient
        else { return }
        ledger.add(
            user, groups: identity.groups, up: counters.clientToTarget - accounted.clientToTarget,
            down: counters.targetToClient - accounted.targetToClient)
        accounted = counters
    }

    /// Whether an allowance is needed: a user with a quota that applies to them.
    static func needsAllowance(_ identity: Identity, services: SessionServices) -> Bool {
        let subject = PolicySubject(user: identity.user, groups: identity.groups)
        return services.usage != nil && identity.user != nil && services.quotas.contains { $0.applies(to: subject) }
    }

    /// The quota `subject` has used up (of `quotas`, else the configured ones), logged for the
    /// session; nil when none.
    static func exceeded(_ quotas: [Quota]?, subject: PolicySubject, services: SessionServices, record: SessionRecord) -> Quota? {
        guard let quota = services.usage?.exceeded(subject, quotas: quotas ?? services.quotas) else { return nil }
        services.logger.notice("quota used up", metadata: record.logFields(["quota": "\(quota.label)"]))
        return quota
    }
}
