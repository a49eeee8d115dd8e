import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// An outbound connection made for a CONNECT, reading off (the relay turns it on).
struct Dialed {
    let channel: any Channel
    /// Bytes of the target that came with an upstream proxy's last answer: the client gets them
    /// right after the success reply, before anything relayed.
    let leftover: ByteBuffer?
}

/// Makes the outbound connection the egress path allowed: straight to the allowed addresses, from
/// the route's source address or interface, or through the route's upstream proxy with its
/// handshake. Every failure comes as a `ConnectFailure` carrying the reply code the client gets.
struct EgressDialer: Sendable {
    let egress: Egress
    let connector: any OutboundConnecting
    var tls = UpstreamTLSContexts()

    /// The upstream proxy a decision's route goes through, if any.
    func upstream(for route: EgressRoute?) -> UpstreamProxy? { egress.upstream(for: route) }

    /// Connects to `destination` for a decision of the egress path: `addresses` are those the
    /// policy allowed (nil: the name goes to the route's upstream unresolved). Within `deadline`.
    func dial(
        _ destination: SOCKSEndpoint, addresses: [SocketAddress]?, route: EgressRoute?, client: ClientNetwork, ticket: LookupTicket?,
        deadline: NIODeadline, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Dialed> {
        let binding = egress.binding(for: route)
        if let upstream = upstream(for: route) {
            // The address the policy allowed, with the port asked for; or the name itself.
            let target = addresses?.first.map(SOCKSEndpoint.init) ?? destination
            return dial(target, via: upstream, binding: binding, client: client, ticket: ticket, deadline: deadline, on: eventLoop)
        }
        guard let addresses else {
            return eventLoop.makeFailedFuture(ConnectFailure(code: .generalFailure, reason: "no upstream for an unresolved name"))
        }
        let name: String
        if case .domain(let domain) = destination.host { name = domain } else { name = "" }
        return connector.connect(
            to: addresses, name: name, port: Int(destination.port), binding: binding, timeout: deadline - eventLoop.now, on: eventLoop
        ).map { Dialed(channel: $0, leftover: nil) }
    }

    /// CONNECT through another proxy: its address (looked up like any name), the connection to it
    /// (from the route's egress address or interface), then its handshake for `destination`.
    private func dial(
        _ destination: SOCKSEndpoint, via upstream: UpstreamProxy, binding: OutboundBinding?, client: ClientNetwork, ticket: LookupTicket?,
        deadline: NIODeadline, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Dialed> {
        // Built before anything is dialled: a head that cannot be built from valid parts ends here.
        let handshake: any UpstreamHandshaking
        switch upstream.kind {
        case .socks5: handshake = SOCKS5ClientHandshake(destination: destination, username: upstream.username, password: upstream.password)
        case .http:
            guard let http = HTTPConnectHandshake(destination: destination, username: upstream.username, password: upstream.password) else {
                return eventLoop.makeFailedFuture(
                    ConnectFailure(code: .generalFailure, reason: "\(upstream): \(destination) cannot go into a request head"))
            }
            handshake = http
        }
        let addresses: EventLoopFuture<[SocketAddress]>
        if let literal = IPAddress(upstream.host) {
            addresses = eventLoop.makeSucceededFuture([literal.socketAddress(port: Int(upstream.port))])
        } else {
            addresses = egress.resolver.resolve(upstream.host, client: client, ticket: ticket, on: eventLoop).flatMapThrowing { outcome in
                guard case .resolved(let ips) = outcome, !ips.isEmpty else {
                    throw ConnectFailure(code: .generalFailure, reason: "\(upstream): cannot resolve \(upstream.host)", configuration: true)
                }
                return ips.map { $0.socketAddress(port: Int(upstream.port)) }
            }
        }
        let connector = self.connector
        return addresses.flatMap { addresses in
            connector.connect(to: addresses, name: upstream.host, port: Int(upstream.port), binding: binding, timeout: deadline - eventLoop.now, on: eventLoop)
                .flatMapErrorThrowing { error in
                    let failure = OutboundConnector.failure(for: error)
                    throw ConnectFailure(code: .generalFailure, reason: "\(upstream): \(failure.reason)", configuration: true)
                }
        }
        .flatMap { target -> EventLoopFuture<Dialed> in
            let done = eventLoop.makePromise(of: ByteBuffer?.self)
            do {
                // socks5+tls: the handshake goes inside TLS (NIOSSL holds it until TLS is up).
                try target.pipeline.syncOperations.addHandlers(try tls.handlers(for: upstream))
                try target.pipeline.syncOperations.addHandler(
                    UpstreamHandshakeHandler(handshake: handshake, upstream: upstream, timeout: max(deadline - eventLoop.now, .milliseconds(1)), done: done))
            } catch {
                target.close(promise: nil)
                return eventLoop.makeFailedFuture(error)
            }
            return done.futureResult.map { Dialed(channel: target, leftover: $0) }
        }
    }
}
