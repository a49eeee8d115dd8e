import Testing

@testable import SallyportRelay

/// A session's quota allowance: leases taken from a ledger as they are spent, and nothing more
/// once the ledger has none left.
@Suite(.timeLimit(.minutes(1))) struct ByteAllowanceTests {
    /// A ledger with `bytes` left, leasing at most `lease` at a time; counts the refills.
    final class Ledger {
        var left: Int
        var refills = 0
        let lease: Int
        init(_ left: Int, lease: Int) {
            self.left = left
            self.lease = lease
        }
        func grant() -> Int {
            refills += 1
            let granted = min(left, lease)
            left -= granted
            return granted
        }
    }

    @Test func spendingTakesLeaseAfterLeaseUntilTheLedgerIsEmpty() {
        let ledger = Ledger(10_000, lease: 4096)
        let allowance = ByteAllowance(lease: 4096, refill: ledger.grant)
        var moved = 0
        while allowance.spend(1000) { moved += 1000 }
        moved += 1000  // the read that found it used up was moved too
        #expect(allowance.exhausted)
        #expect(moved >= 10_000 && moved <= 10_000 + 1000, "\(moved)")
        #expect(ledger.refills == 4, "three leases and the empty answer")
        #expect(!allowance.spend(1) && !allowance.admits(1))
    }

    @Test func overshootIsAtMostOneReadWhateverItsSize() {
        for read in [1, 100, 4096, 65_536] {
            let ledger = Ledger(100_000, lease: 4096)
            let allowance = ByteAllowance(lease: 4096, refill: ledger.grant)
            var moved = 0
            for _ in 0..<10_000 {
                moved += read
                if !allowance.spend(read) { break }
            }
            #expect(moved <= 100_000 + read, "read \(read): \(moved)")
        }
    }

    @Test func aDatagramIsAdmittedWholeOrNotAtAll() {
        let ledger = Ledger(1500, lease: 1000)
        let allowance = ByteAllowance(lease: 1000, refill: ledger.grant)
        #expect(allowance.admits(900))
        allowance.spend(900)
        #expect(allowance.admits(600), "100 left and a refill of 500")
        allowance.spend(600)
        #expect(!allowance.admits(1))
    }

    @Test func anEmptyLedgerAtTheStartAdmitsNothing() {
        let allowance = ByteAllowance(lease: 4096) { 0 }
        #expect(allowance.exhausted && !allowance.admits(1))
    }
}
