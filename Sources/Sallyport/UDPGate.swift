import Logging
import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// Resolved names, shared by every UDP association of a server: a datagram stream to a name costs
/// one lookup, not one per association. Small and short-lived on purpose.
final class NameCache: Sendable {
    private struct Entry {
        var addresses: [SocketAddress]
        var expires: NIODeadline
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    let capacity: Int
    let lifetime: TimeAmount

    init(capacity: Int = 1024, lifetime: TimeAmount = .seconds(30)) {
        self.capacity = capacity
        self.lifetime = lifetime
    }

    func lookup(_ name: String, now: NIODeadline = .now()) -> [SocketAddress]? {
        entries.withLockedValue { entries in
            guard let entry = entries[name], entry.expires > now else { return nil }
            return entry.addresses
        }
    }

    func store(_ name: String, _ addresses: [SocketAddress], now: NIODeadline = .now()) {
        entries.withLockedValue { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= capacity, let oldest = entries.min(by: { $0.value.expires < $1.value.expires })?.key {
                    entries[oldest] = nil
                }
            }
            entries[name] = Entry(addresses: addresses, expires: now + lifetime)
        }
    }
}

/// The egress policy for the datagrams of one association: each destination is checked as a
/// CONNECT would be (name, then every address, the special-address guard included), and a refusal
/// is logged once.
struct UDPGate: Sendable {
    let policy: Policy
    let subject: PolicySubject
    let resolver: HostResolver
    let names: NameCache
    let logger: Logger
    let session: String
    let client: String

    func check(_ endpoint: SOCKSEndpoint, on eventLoop: any EventLoop) -> EventLoopFuture<SocketAddress?> {
        let port = endpoint.port
        switch endpoint.host {
        case .ipv4, .ipv6:
            guard let address = try? endpoint.socketAddress() else { return eventLoop.makeSucceededFuture(nil) }
            return eventLoop.makeSucceededFuture(choose(from: [address], name: nil, endpoint: endpoint))
        case .domain(let name):
            if case .deny(let reason) = policy.checkName(name, port: port, command: .udpAssociate, subject: subject) {
                logDenied(endpoint, reason: "\(reason)")
                return eventLoop.makeSucceededFuture(nil)
            }
            let key = name.lowercased()
            let resolved: EventLoopFuture<[SocketAddress]>
            if let cached = names.lookup(key) {
                resolved = eventLoop.makeSucceededFuture(cached)
            } else {
                let names = self.names
                resolved = resolver.resolve(host: name, port: 0, on: eventLoop).map { addresses in
                    names.store(key, addresses)
                    return addresses
                }
            }
            return resolved.map { addresses in
                let withPort = addresses.compactMap { IPAddress($0).flatMap { try? $0.socketAddress(port: Int(port)) } }
                return choose(from: withPort, name: name, endpoint: endpoint)
            }.recover { error in
                logDenied(endpoint, reason: "\(error)")
                return nil
            }
        }
    }

    private func choose(from addresses: [SocketAddress], name: String?, endpoint: SOCKSEndpoint) -> SocketAddress? {
        let ips = addresses.compactMap(IPAddress.init)
        switch policy.checkAddresses(ips, name: name, port: endpoint.port, command: .udpAssociate, subject: subject) {
        case .deny(let reason):
            logDenied(endpoint, reason: "\(reason)")
            return nil
        case .allow(let allowed, _):
            return addresses.first { IPAddress($0).map(allowed.contains) ?? false }
        }
    }

    private func logDenied(_ endpoint: SOCKSEndpoint, reason: String) {
        logger.notice(
            "udp destination denied",
            metadata: ["session": "\(session)", "user": "\(subject.user ?? "-")", "client": "\(client)", "dst": "\(endpoint)", "rule": "\(reason)"])
    }
}
