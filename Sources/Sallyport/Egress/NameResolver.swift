import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// How a name lookup came out, as the egress path sees it.
enum ResolveOutcome: Sendable, Equatable {
    /// The name's addresses, in the system resolver's order.
    case resolved([IPAddress])
    /// The resolver answered that the name has no usable address (or failed).
    case failed(String)
    /// No answer within `timeouts.dns`.
    case timedOut
    /// Refused at once: this client already has its share of lookups in flight or queued.
    case overShare
    /// Refused at once: the queue of lookups is full.
    case overloaded
    /// The session or association that asked has ended.
    case cancelled
}

/// Something that can turn a name into addresses for a client: the real resolver, or a test's fake.
protocol NameResolving: Sendable {
    func resolve(_ name: String, client: ClientNetwork, ticket: LookupTicket?, on eventLoop: any EventLoop) -> EventLoopFuture<ResolveOutcome>
    /// A ticket for one session's lookups.
    func makeTicket() -> LookupTicket
}

extension NameResolving {
    func makeTicket() -> LookupTicket { LookupTicket() }
}

/// The name lookups of one session or association, called off together when it ends.
final class LookupTicket: Sendable {
    private struct State {
        var cancelled = false
        var waiting: [(name: String, waiter: UInt64)] = []
    }

    private let state = NIOLockedValueBox(State())
    // nonisolated(unsafe): written once, in init, and only read after; weak, so that a ticket kept
    // by a session does not keep a stopped server's resolver alive.
    nonisolated(unsafe) fileprivate weak var resolver: NameResolver?

    fileprivate init(resolver: NameResolver?) {
        self.resolver = resolver
    }

    /// A ticket for a resolver that is not a `NameResolver` (tests).
    convenience init() { self.init(resolver: nil) }

    var isCancelled: Bool { state.withLockedValue { $0.cancelled } }

    /// Drops every lookup still waiting: their callers get `.cancelled`, and a queued lookup nobody
    /// else waits for never runs.
    func cancel() {
        let waiting = state.withLockedValue { state -> [(name: String, waiter: UInt64)] in
            state.cancelled = true
            defer { state.waiting = [] }
            return state.waiting
        }
        guard !waiting.isEmpty else { return }
        resolver?.drop(waiting, outcome: .cancelled)
    }

    /// Records a waiter unless the ticket is cancelled.
    fileprivate func add(_ name: String, _ waiter: UInt64) -> Bool {
        state.withLockedValue { state in
            guard !state.cancelled else { return false }
            state.waiting.append((name, waiter))
            return true
        }
    }

    fileprivate func forget(_ name: String, _ waiter: UInt64) {
        state.withLockedValue { state in
            if let index = state.waiting.firstIndex(where: { $0.waiter == waiter && $0.name == name }) {
                state.waiting.remove(at: index)
            }
        }
    }
}

/// The system resolver (`getaddrinfo`) behind a front that no client can starve.
///
/// - Identical names in flight are looked up once; every asker gets the answer.
/// - Lookups wait in a bounded queue for one of a fixed number of threads.
/// - Each client (an IPv4 address, an IPv6 /64) may own at most `perClient` lookups, queued or
///   running; a running lookup stays charged to its client until the system resolver returns, even
///   when nobody waits for it any more, so a flood of slow names holds at most that many threads.
///   Past its share a client's lookups are refused at once.
/// - A caller waits at most `timeout`; a lookup whose callers all left (timed out, or their session
///   ended) is taken out of the queue before it runs.
/// - Answers are cached (addresses for `cacheTTL`, failures for `negativeTTL`) in an LRU table.
final class NameResolver: NameResolving, Sendable {
    /// The resolver's limits; all but `threads` can change on reload.
    struct Settings: Sendable, Hashable {
        var threads = 16
        var queue = 1024
        var perClient = 8
        var timeout: TimeAmount = .seconds(5)
        var cacheTTL: TimeAmount = .seconds(30)
        var negativeTTL: TimeAmount = .seconds(5)
        var cacheSize = 4096
    }

    /// A blocking lookup: the system resolver, or a test's stand-in.
    typealias Lookup = @Sendable (String) -> Result<[IPAddress], LookupFailure>

    struct LookupFailure: Error, Sendable, Equatable {
        var reason: String
    }

    private struct Waiter {
        var id: UInt64
        var promise: EventLoopPromise<ResolveOutcome>
        var timer: Scheduled<Void>?
        var ticket: LookupTicket?
    }

    private struct Pending {
        var owner: ClientNetwork
        var waiters: [Waiter] = []
        var running = false
    }

    private struct CacheEntry {
        var outcome: ResolveOutcome
        var expires: NIODeadline
    }

    private struct State {
        var settings: Settings
        var pending: [String: Pending] = [:]
        /// Names waiting for a thread, oldest first; entries whose lookup left are skipped.
        var queue: [String] = []
        var queueHead = 0
        var queued = 0
        var running = 0
        var owned: [ClientNetwork: Int] = [:]
        var cache: LRUTable<String, CacheEntry>
        var nextWaiter: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>
    private let pool: NIOThreadPool
    private let lookup: Lookup
    /// The clock cache entries expire by (tests inject their own).
    private let now: @Sendable () -> NIODeadline

    /// Told of each answer: `resolved` or `failed` with the system resolver's time, `cached`,
    /// `timed_out` (for metrics).
    private let observe: @Sendable (String, TimeAmount?) -> Void

    init(
        settings: Settings = Settings(), lookup: @escaping Lookup = SystemResolver.lookup, now: @escaping @Sendable () -> NIODeadline = { .now() },
        observe: @escaping @Sendable (String, TimeAmount?) -> Void = { _, _ in }
    ) {
        self.now = now
        self.observe = observe
        self.state = NIOLockedValueBox(State(settings: settings, cache: LRUTable(capacity: settings.cacheSize)))
        self.lookup = lookup
        self.pool = NIOThreadPool(numberOfThreads: max(settings.threads, 1))
        pool.start()
    }

    /// Takes new limits (a reload); the thread count stays as started.
    func update(_ settings: Settings) {
        state.withLockedValue { state in
            if state.settings.cacheSize != settings.cacheSize { state.cache = LRUTable(capacity: settings.cacheSize) }
            state.settings = settings
        }
    }

    func makeTicket() -> LookupTicket { LookupTicket(resolver: self) }

    /// Stops the threads once the lookups running now return (the server stopped). Does not wait:
    /// a lookup stuck in the system resolver must not hold up a shutdown.
    /// Stops the lookup threads and waits for them (a process that exits first leaves them unjoined).
    func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    /// Lookups queued or running now, and the threads busy: for tests and status.
    var load: (queued: Int, running: Int) { state.withLockedValue { ($0.queued, $0.running) } }

    func resolve(_ name: String, client: ClientNetwork, ticket: LookupTicket?, on eventLoop: any EventLoop) -> EventLoopFuture<ResolveOutcome> {
        let key = Policy.normalize(name)  // the form the rules compare, merged and cached by
        let now = self.now()
        var start: [String] = []
        let answer: EventLoopFuture<ResolveOutcome> = state.withLockedValue { state in
            if let cached = state.cache.use(key) {
                if cached.expires > now {
                    observe("cached", nil)
                    return eventLoop.makeSucceededFuture(cached.outcome)
                }
                state.cache.remove(key)
            }
            if state.pending[key] == nil {
                if state.owned[client, default: 0] >= state.settings.perClient { return eventLoop.makeSucceededFuture(.overShare) }
                if state.queued >= state.settings.queue { return eventLoop.makeSucceededFuture(.overloaded) }
                state.pending[key] = Pending(owner: client)
                state.owned[client, default: 0] += 1
                state.queue.append(key)
                state.queued += 1
            }
            state.nextWaiter += 1
            let id = state.nextWaiter
            if let ticket, !ticket.add(key, id) {
                dropIfAbandoned(key, in: &state)
                return eventLoop.makeSucceededFuture(.cancelled)
            }
            let promise = eventLoop.makePromise(of: ResolveOutcome.self)
            let timer = eventLoop.scheduleTask(in: state.settings.timeout) { [weak self] () -> Void in
                self?.drop([(key, id)], outcome: .timedOut)
            }
            state.pending[key]!.waiters.append(Waiter(id: id, promise: promise, timer: timer, ticket: ticket))
            start = takeStartable(&state)
            return promise.futureResult
        }
        run(start)
        return answer
    }

    /// Ends these waiters with `outcome` (their ticket was cancelled, or they timed out).
    fileprivate func drop(_ waiters: [(name: String, waiter: UInt64)], outcome: ResolveOutcome) {
        var done: [(name: String, waiter: Waiter)] = []
        state.withLockedValue { state in
            for (name, id) in waiters {
                guard let index = state.pending[name]?.waiters.firstIndex(where: { $0.id == id }) else { continue }
                done.append((name, state.pending[name]!.waiters.remove(at: index)))
                dropIfAbandoned(name, in: &state)
            }
        }
        if outcome == .timedOut { for _ in done { observe("timed_out", nil) } }
        for (name, waiter) in done {
            waiter.timer?.cancel()
            // A cancelled ticket has already let go of its list.
            if outcome != .cancelled { waiter.ticket?.forget(name, waiter.id) }
            waiter.promise.succeed(outcome)
        }
    }

    /// A queued lookup nobody waits for leaves the queue and its owner's share; a running one stays
    /// charged until the system resolver returns.
    private func dropIfAbandoned(_ name: String, in state: inout State) {
        guard let pending = state.pending[name], pending.waiters.isEmpty, !pending.running else { return }
        state.pending[name] = nil
        state.queued -= 1
        release(pending.owner, in: &state)
    }

    private func release(_ owner: ClientNetwork, in state: inout State) {
        let count = state.owned[owner, default: 1] - 1
        state.owned[owner] = count > 0 ? count : nil
    }

    /// Names to start now, while threads are free; marks them running.
    private func takeStartable(_ state: inout State) -> [String] {
        var names: [String] = []
        while state.running < state.settings.threads, state.queueHead < state.queue.count {
            let name = state.queue[state.queueHead]
            state.queueHead += 1
            guard var pending = state.pending[name], !pending.running else { continue }
            pending.running = true
            state.pending[name] = pending
            state.queued -= 1
            state.running += 1
            names.append(name)
        }
        // Compact the queue once its consumed head outweighs what is left.
        if state.queueHead > 64, state.queueHead * 2 > state.queue.count {
            state.queue.removeFirst(state.queueHead)
            state.queueHead = 0
        }
        return names
    }

    private func run(_ names: [String]) {
        for name in names {
            let lookup = self.lookup
            pool.submit { [self] work in
                let result: Result<[IPAddress], LookupFailure>
                if case .active = work {
                    let started = NIODeadline.now()
                    result = lookup(name)
                    observe(result.isSuccess ? "resolved" : "failed", NIODeadline.now() - started)
                } else {
                    result = .failure(LookupFailure(reason: "resolver stopped"))
                }
                finished(name, result)
            }
        }
    }

    private func finished(_ name: String, _ result: Result<[IPAddress], LookupFailure>) {
        let outcome: ResolveOutcome
        switch result {
        case .success(let addresses): outcome = .resolved(addresses)
        case .failure(let failure): outcome = .failed(failure.reason)
        }
        var start: [String] = []
        let waiters: [Waiter] = state.withLockedValue { state in
            state.running -= 1
            let pending = state.pending.removeValue(forKey: name)
            if let owner = pending?.owner { release(owner, in: &state) }
            let ttl = result.isSuccess ? state.settings.cacheTTL : state.settings.negativeTTL
            if ttl > .zero { state.cache.set(name, CacheEntry(outcome: outcome, expires: now() + ttl)) }
            start = takeStartable(&state)
            return pending?.waiters ?? []
        }
        run(start)
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.ticket?.forget(name, waiter.id)
            waiter.promise.succeed(outcome)
        }
    }
}

extension Result {
    fileprivate var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
