import NIOConcurrencyHelpers
import NIOCore

/// Remembers successful logins for a short time, so that a browser opening fifty connections costs
/// one PAM check, not fifty; and merges identical checks in flight, so that fifty connections
/// opened at once cost one check too (whatever the lifetime, 0 included).
///
/// An entry is the user name and the client's address (address-based PAM rules, `PAM_RHOST`, are
/// never skipped for another address) with a keyed hash of the password (SipHash-2-4 under a random
/// key made at start, twice with two keys: 128 bits), never the password. Only successes are
/// cached; a different password goes to the checker as usual. A password changed in PAM still
/// works from the cache until its entry expires, so keep the lifetime short.
public final class CachingAuthenticator: Authenticator {
    public let base: any Authenticator
    public let lifetime: TimeAmount
    private let keys: (SipHash24.Key, SipHash24.Key)
    private let state = NIOLockedValueBox(State())
    private let capacity: Int

    struct Key: Hashable {
        var user: String
        var client: String
    }

    struct Entry {
        var digest: Digest
        var identity: Identity
        var expires: NIODeadline
    }

    struct Digest: Hashable {
        var high: UInt64
        var low: UInt64
    }

    struct InFlightKey: Hashable {
        var key: Key
        var digest: Digest
    }

    /// A check in flight and who waits for it: it is dropped unrun only when all of them have gone.
    struct InFlight {
        var future: EventLoopFuture<AuthenticationResult>
        var waiters: NIOLockedValueBox<[@Sendable () -> Bool]>
    }

    private let now: @Sendable () -> NIODeadline

    struct State {
        var entries: [Key: Entry] = [:]
        var inFlight: [InFlightKey: InFlight] = [:]
    }

    /// - Parameter now: the clock entries expire by (tests inject one).
    public init(
        base: any Authenticator, lifetime: TimeAmount, capacity: Int = 10_000, now: @escaping @Sendable () -> NIODeadline = { .now() }
    ) {
        self.now = now
        self.base = base
        self.lifetime = lifetime
        self.capacity = capacity
        var generator = SystemRandomNumberGenerator()
        keys = (
            SipHash24.Key(k0: generator.next(), k1: generator.next()),
            SipHash24.Key(k0: generator.next(), k1: generator.next())
        )
    }

    /// Forgets every entry (configuration reload).
    public func clear() {
        state.withLockedValue { $0.entries.removeAll() }
    }

    public var count: Int { state.withLockedValue { $0.entries.count } }

    func digest(_ request: AuthenticationRequest) -> Digest {
        // The user name is part of the hashed input, so equal passwords of two users differ.
        var input = Array(request.username.utf8)
        input.reserveCapacity(input.count + 1 + request.password.count)  // no reallocation leaves a copy behind
        input.append(0)
        request.password.withUnsafeBytes { input.append(contentsOf: $0) }
        defer { for index in input.indices { input[index] = 0 } }
        return Digest(high: SipHash24.hash(input, key: keys.0), low: SipHash24.hash(input, key: keys.1))
    }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let key = Key(user: request.username, client: request.client?.ipAddress ?? "-")
        let flight = InFlightKey(key: key, digest: digest(request))
        let now = self.now()
        let lifetime = self.lifetime
        enum Found {
            case cached(Identity)
            case waiting(EventLoopFuture<AuthenticationResult>)
            case start(EventLoopPromise<AuthenticationResult>, NIOLockedValueBox<[@Sendable () -> Bool]>)
        }
        let found: Found = state.withLockedValue { state in
            if lifetime > .zero, let entry = state.entries[key], entry.expires > now, entry.digest == flight.digest {
                return .cached(entry.identity)
            }
            if let running = state.inFlight[flight] {
                running.waiters.withLockedValue { $0.append(request.stillWanted) }
                return .waiting(running.future)
            }
            let promise = eventLoop.makePromise(of: AuthenticationResult.self)
            let waiters = NIOLockedValueBox([request.stillWanted])
            state.inFlight[flight] = InFlight(future: promise.futureResult, waiters: waiters)
            return .start(promise, waiters)
        }
        switch found {
        case .cached(let identity):
            return eventLoop.makeSucceededFuture(.success(identity))
        case .waiting(let future):
            return future.hop(to: eventLoop)
        case .start(let promise, let waiters):
            let state = self.state
            let capacity = self.capacity
            var merged = request
            merged.stillWanted = { waiters.withLockedValue { $0.contains { $0() } } }
            base.authenticate(merged, on: eventLoop).whenComplete { result in
                state.withLockedValue { state in
                    state.inFlight[flight] = nil
                    guard lifetime > .zero, case .success(.success(let identity)) = result else { return }
                    let now = self.now()
                    if state.entries.count >= capacity {
                        state.entries = state.entries.filter { $0.value.expires > now }
                        if state.entries.count >= capacity { state.entries.removeAll() }
                    }
                    state.entries[key] = Entry(digest: flight.digest, identity: identity, expires: now + lifetime)
                }
                promise.completeWith(result)
            }
            return promise.futureResult
        }
    }
}

/// SipHash-2-4 (Aumasson and Bernstein), a keyed hash: without the key, its outputs cannot be
/// predicted or matched.
public enum SipHash24 {
    public struct Key: Sendable {
        public var k0: UInt64
        public var k1: UInt64

        public init(k0: UInt64, k1: UInt64) {
            self.k0 = k0
            self.k1 = k1
        }
    }

    public static func hash(_ bytes: [UInt8], key: Key) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ key.k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ key.k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ key.k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ key.k1

        func round() {
            v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
            v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
            v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
            v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
        }

        let fullWords = bytes.count / 8
        for word in 0..<fullWords {
            var m: UInt64 = 0
            for index in 0..<8 { m |= UInt64(bytes[word * 8 + index]) << (8 * UInt64(index)) }
            v3 ^= m
            round()
            round()
            v0 ^= m
        }
        var last = UInt64(truncatingIfNeeded: bytes.count) << 56
        for index in 0..<(bytes.count % 8) { last |= UInt64(bytes[fullWords * 8 + index]) << (8 * UInt64(index)) }
        v3 ^= last
        round()
        round()
        v0 ^= last
        v2 ^= 0xff
        for _ in 0..<4 { round() }
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 { (self << count) | (self >> (64 - count)) }
}
