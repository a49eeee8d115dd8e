/// The bytes one session may still move under its user's quotas: a small lease taken from the
/// usage ledger, spent by every read (both directions together, TCP or UDP), refilled as it runs
/// out. `refill` reports what the session moved so far to the ledger and grants the next lease,
/// 0 when the quota is used up; from then on the session reads nothing more. So a quota is
/// overshot by at most one lease (and the read that spent it) per session, whatever the rate.
/// Lives on the session's event loop.
public final class ByteAllowance {
    /// The bytes one lease grants at most.
    public let lease: Int
    private var remaining: Int
    private let refill: () -> Int
    /// Used up: no lease is left and none was granted.
    public private(set) var exhausted = false

    /// `refill` is asked at once for the first lease.
    public init(lease: Int, refill: @escaping () -> Int) {
        self.lease = lease
        self.refill = refill
        remaining = 0
        exhausted = !topUp()
    }

    /// Spends `bytes` just moved; false when the allowance is used up (read nothing more).
    @discardableResult
    public func spend(_ bytes: Int) -> Bool {
        guard !exhausted else { return false }
        remaining -= bytes
        if remaining > 0 { return true }
        exhausted = !topUp()
        return !exhausted
    }

    /// Whether `bytes` more may go now (a datagram is taken whole or not at all).
    public func admits(_ bytes: Int) -> Bool {
        guard !exhausted else { return false }
        while remaining < bytes {
            let granted = refill()
            guard granted > 0 else {
                if remaining <= 0 { exhausted = true }
                return false
            }
            remaining += granted
        }
        return true
    }

    private func topUp() -> Bool {
        let granted = refill()
        remaining += granted
        return remaining > 0
    }
}
