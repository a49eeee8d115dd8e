/// A table of at most `capacity` entries that forgets the least recently used one to make room:
/// every operation is O(1) (a dictionary of slots threaded on a doubly linked list), so a client
/// cycling through new keys costs the same per key however full the table is.
public struct LRUTable<Key: Hashable, Value> {
    fileprivate struct Slot {
        var key: Key
        var value: Value
        var newer: Int
        var older: Int
    }

    private static var none: Int { -1 }
    /// Freed slots are nil, so that a forgotten value (a channel, a buffer) is let go at once.
    private var slots: [Slot?] = []
    private var index: [Key: Int] = [:]
    private var free: [Int] = []
    /// The most and the least recently used slots.
    private var newest = LRUTable.none
    private var oldest = LRUTable.none

    /// The most entries kept; at least 1.
    public let capacity: Int

    public init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    public var count: Int { index.count }

    /// The value of `key`, marking it the most recently used.
    public mutating func use(_ key: Key) -> Value? {
        guard let slot = index[key] else { return nil }
        moveToFront(slot)
        return slots[slot]!.value
    }

    /// The value of `key`, without marking it used.
    public func peek(_ key: Key) -> Value? {
        index[key].map { slots[$0]!.value }
    }

    /// Sets `key` (as the most recently used); returns the entry forgotten to make room, if any.
    @discardableResult
    public mutating func set(_ key: Key, _ value: Value) -> (key: Key, value: Value)? {
        if let slot = index[key] {
            slots[slot]!.value = value
            moveToFront(slot)
            return nil
        }
        var evicted: (key: Key, value: Value)?
        if index.count >= capacity { evicted = removeOldest() }
        let slot: Int
        let fresh = Slot(key: key, value: value, newer: Self.none, older: newest)
        if let reused = free.popLast() {
            slot = reused
            slots[slot] = fresh
        } else {
            slot = slots.count
            slots.append(fresh)
        }
        if newest != Self.none { slots[newest]!.newer = slot }
        newest = slot
        if oldest == Self.none { oldest = slot }
        index[key] = slot
        return evicted
    }

    /// Removes `key`; returns its value.
    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        guard let slot = index.removeValue(forKey: key) else { return nil }
        unlink(slot)
        free.append(slot)
        let value = slots[slot]!.value
        slots[slot] = nil
        return value
    }

    /// Removes and returns the least recently used entry.
    @discardableResult
    public mutating func removeOldest() -> (key: Key, value: Value)? {
        guard oldest != Self.none else { return nil }
        let entry = slots[oldest]!
        remove(entry.key)
        return (entry.key, entry.value)
    }

    /// Every value, most recently used first.
    public var values: [Value] {
        var result: [Value] = []
        result.reserveCapacity(index.count)
        var slot = newest
        while slot != Self.none {
            result.append(slots[slot]!.value)
            slot = slots[slot]!.older
        }
        return result
    }

    public mutating func removeAll() {
        slots.removeAll()
        index.removeAll()
        free.removeAll()
        newest = Self.none
        oldest = Self.none
    }

    private mutating func unlink(_ slot: Int) {
        let (newer, older) = (slots[slot]!.newer, slots[slot]!.older)
        if newer != Self.none { slots[newer]!.older = older } else { newest = older }
        if older != Self.none { slots[older]!.newer = newer } else { oldest = newer }
    }

    private mutating func moveToFront(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        slots[slot]!.newer = Self.none
        slots[slot]!.older = newest
        if newest != Self.none { slots[newest]!.newer = slot }
        newest = slot
        if oldest == Self.none { oldest = slot }
    }
}

extension LRUTable: Sendable where Key: Sendable, Value: Sendable {}
extension LRUTable.Slot: Sendable where Key: Sendable, Value: Sendable {}
