import Testing

@testable import SallyportRelay

/// The bounded table behind per-client and per-destination state: the least recently used goes first.
@Suite(.timeLimit(.minutes(1))) struct LRUTableTests {
    @Test func lruTableForgetsTheLeastRecentlyUsed() {
        var table = LRUTable<Int, String>(capacity: 3)
        #expect(table.set(1, "a") == nil)
        table.set(2, "b")
        table.set(3, "c")
        #expect(table.use(1) == "a")  // 2 is now the oldest
        let evicted = table.set(4, "d")
        #expect(evicted?.key == 2)
        #expect(table.count == 3)
        #expect(table.peek(2) == nil)
        #expect(table.values == ["d", "a", "c"])
        #expect(table.remove(1) == "a")
        #expect(table.removeOldest()?.key == 3)
        table.set(5, "e")
        table.set(6, "f")
        #expect(table.values == ["f", "e", "d"])
        // Many keys through a small table: the count never passes the capacity.
        for key in 0..<10_000 { table.set(key, "\(key)") }
        #expect(table.count == 3)
        #expect(table.values == ["9999", "9998", "9997"])
    }
}
