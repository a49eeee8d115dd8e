import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// CONNECT through another proxy: the upstream's address (looked up like any name), the
/// connection to it (from the rule's egress address or interface), its handshake, then the relay
/// as for a direct connection. The destination goes to the upstream as the client gave it, or as
/// the address the policy allowed.
extension Session {
    func connect(via upstream: UpstreamProxy, to destination: SOCKSEndpoint, binding: OutboundBinding?, request: SOCKSRequest, deadline: NIODeadline) {
        guard let eventLoop = channel?.eventLoop else { return }
        phase = .connecting
        record.notesForWriting().upstream = upstream.description
        if timer == nil {
            timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in requestTimedOut() }
        }
        // Built before anything is dialled: a head that cannot be built from valid parts ends here.
        let handshake: any UpstreamHandshaking
        switch upstream.kind {
        case .socks5: handshake = SOCKS5ClientHandshake(destination: destination, username: upstream.username, password: upstream.password)
        case .http:
            guard let http = HTTPConnectHandshake(destination: destination, username: upstream.username, password: upstream.password) else {
                let failure = ConnectFailure(code: .generalFailure, reason: "\(upstream): \(destination) cannot go into a request head")
                connected(.failure(failure), request: request)
                return
            }
            handshake = http
        }
        let addresses: EventLoopFuture<[SocketAddress]>
        if let literal = IPAddress(upstream.host) {
            addresses = eventLoop.makeSucceededFuture([literal.socketAddress(port: Int(upstream.port))])
        } else {
            if ticket == nil { ticket = services.egress.resolver.makeTicket() }
            addresses = services.egress.resolver.resolve(upstream.host, client: clientNetwork, ticket: ticket, on: eventLoop).flatMapThrowing { outcome in
                guard case .resolved(let ips) = outcome, !ips.isEmpty else {
                    throw ConnectFailure(code: .generalFailure, reason: "\(upstream): cannot resolve \(upstream.host)", configuration: true)
                }
                return ips.map { $0.socketAddress(port: Int(upstream.port)) }
            }
        }
        let connector = services.connector
        addresses.flatMap { addresses in
            connector.connect(to: addresses, name: upstream.host, port: Int(upstream.port), binding: binding, timeout: deadline - eventLoop.now, on: eventLoop)
                .flatMapErrorThrowing { error in
                    let failure = OutboundConnector.failure(for: error)
                    throw ConnectFailure(code: .generalFailure, reason: "\(upstream): \(failure.reason)", configuration: true)
                }
        }
        .flatMap { target -> EventLoopFuture<(any Channel, ByteBuffer?)> in
            let done = eventLoop.makePromise(of: ByteBuffer?.self)
            do {
                try target.pipeline.syncOperations.addHandler(
                    UpstreamHandshakeHandler(handshake: handshake, upstream: upstream, timeout: max(deadline - eventLoop.now, .milliseconds(1)), done: done))
            } catch {
                target.close(promise: nil)
                return eventLoop.makeFailedFuture(error)
            }
            return done.futureResult.map { (target, $0) }
        }
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success(let (target, leftover)):
                record.notes?.targetLeftover = leftover
                connected(.success(target), request: request)
            case .failure(let error):
                connected(.failure(error), request: request)
            }
        }
    }
}
