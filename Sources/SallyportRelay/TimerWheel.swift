import NIOConcurrencyHelpers
import NIOCore

/// What a `TimerWheel` tells when a deadline it was given comes.
public protocol TimerWheelClient: AnyObject {
    /// The deadline set with `token` has come (up to one tick late).
    func deadlineReached(_ token: Int)
}

/// The coarse deadlines of many sessions on one event loop — negotiation timeouts, idle looks —
/// checked by one repeating task every `tick`, so that setting or cancelling one allocates nothing
/// (once the wheel has grown to the number of sessions) and costs the event loop no scheduled task
/// each. A deadline fires at the first tick at or after it. The task runs only while a deadline is
/// set. Lives on one event loop.
public final class TimerWheel {
    /// A deadline that was set; cancel it with the wheel that gave it.
    public struct Handle: Hashable, Sendable {
        fileprivate let slot: Int32
        fileprivate let generation: UInt32
    }

    private struct Entry {
        var deadline: NIODeadline
        var generation: UInt32
        var client: (any TimerWheelClient)?
        var token: Int
    }

    public let eventLoop: any EventLoop
    public let tick: TimeAmount
    private var entries: [Entry] = []
    /// Slots made so far: the most deadlines set at once (for tests).
    var slots: Int { entries.count }
    private var free: [Int32] = []
    private var due: [(slot: Int32, generation: UInt32)] = []
    private var ticking: RepeatedTask?
    /// Deadlines set and not yet reached or cancelled.
    public private(set) var count = 0

    public init(eventLoop: any EventLoop, tick: TimeAmount = .milliseconds(100)) {
        self.eventLoop = eventLoop
        self.tick = tick
    }

    /// Calls `client.deadlineReached(token)` at the first tick at or after `deadline`.
    @discardableResult
    public func schedule(at deadline: NIODeadline, for client: any TimerWheelClient, token: Int = 0) -> Handle {
        let entry = Entry(deadline: deadline, generation: 0, client: client, token: token)
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            entries[Int(slot)].deadline = deadline
            entries[Int(slot)].client = client
            entries[Int(slot)].token = token
        } else {
            slot = Int32(entries.count)
            entries.append(entry)
        }
        count += 1
        if ticking == nil {
            let wheel = NIOLoopBound(self, eventLoop: eventLoop)
            ticking = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in wheel.value.advance() }
        }
        return Handle(slot: slot, generation: entries[Int(slot)].generation)
    }

    /// Drops a deadline that has not come yet; nothing happens for one that came or was dropped.
    public func cancel(_ handle: Handle) {
        let slot = Int(handle.slot)
        guard slot < entries.count, entries[slot].generation == handle.generation, entries[slot].client != nil else { return }
        release(slot)
    }

    private func release(_ slot: Int) {
        entries[slot].client = nil
        entries[slot].generation &+= 1
        free.append(Int32(slot))
        count -= 1
    }

    /// One tick: every deadline that has come fires, in the order they sit in the wheel. A client
    /// may set or cancel deadlines from its callback.
    private func advance() {
        let now = eventLoop.now
        for slot in entries.indices where entries[slot].client != nil && entries[slot].deadline <= now {
            due.append((Int32(slot), entries[slot].generation))
        }
        for (slot, generation) in due {
            let index = Int(slot)
            guard entries[index].generation == generation, let client = entries[index].client else { continue }
            let token = entries[index].token
            release(index)
            client.deadlineReached(token)
        }
        due.removeAll(keepingCapacity: true)
        if count == 0 {
            ticking?.cancel()
            ticking = nil
        }
    }
}

/// One `TimerWheel` per event loop, made when a loop first asks.
public final class TimerWheels: Sendable {
    private let wheels = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<TimerWheel>]>([:])
    private let tick: TimeAmount

    public init(tick: TimeAmount = .milliseconds(100)) {
        self.tick = tick
    }

    /// The wheel of `eventLoop`. Call on that event loop.
    public func wheel(on eventLoop: any EventLoop) -> TimerWheel {
        let key = ObjectIdentifier(eventLoop)
        let tick = self.tick
        return wheels.withLockedValue { wheels in
            if let wheel = wheels[key] { return wheel }
            let made = NIOLoopBound(TimerWheel(eventLoop: eventLoop, tick: tick), eventLoop: eventLoop)
            wheels[key] = made
            return made
        }.value
    }
}
