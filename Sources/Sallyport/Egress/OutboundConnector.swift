import NIOCore
import NIOPosix
import SOCKSProtocol
import SallyportRelay

#if canImport(Glibc)
import Glibc
#endif

/// Why an outbound connection failed, as the reply code the client gets and a reason for the log.
struct ConnectFailure: Error, CustomStringConvertible {
    var code: SOCKSReplyCode
    var reason: String
    /// A problem of the configuration or of an upstream proxy (the source address or interface
    /// of the egress rule could not be used, the upstream is down or refused our login), not of
    /// the destination: worth a warning.
    var configuration = false
    var description: String { reason }
}

/// Opens the outbound TCP connection of a CONNECT: the real connector, or a test's fake.
protocol OutboundConnecting: Sendable {
    /// Connects to one of `addresses` (all of one name, already allowed by the policy) within
    /// `timeout`, on `eventLoop`. The channel comes with reading off: the relay turns it on.
    /// `binding`: the source address and interface the egress rule names, applied before connect;
    /// only addresses of the source address's family are tried.
    func connect(
        to addresses: [SocketAddress], name: String, port: Int, binding: OutboundBinding?, timeout: TimeAmount, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel>
}

/// Connects with happy eyeballs under one timeout, and maps failures to RFC 1928 reply codes.
struct OutboundConnector: OutboundConnecting {
    let receiveBufferBytes: Int
    /// Keepalive on the target side (the client side inherits it from the listener).
    var keepalive: TCPKeepalive?

    /// On `eventLoop` so that the relay can join the new channel with the client's; with reading
    /// off, so that no byte the target sends first is lost before the relay is in place.
    func connect(
        to addresses: [SocketAddress], name: String, port: Int, binding: OutboundBinding?, timeout: TimeAmount, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        var addresses = addresses
        if let binding {
            addresses = addresses.filter(binding.reaches)
            if addresses.isEmpty {
                return eventLoop.makeFailedFuture(ConnectFailure(code: .hostUnreachable, reason: "no address of the egress address's family"))
            }
        }
        // ClientBootstrap sets TCP_NODELAY itself.
        let options = RelayChannelOptions(receiveBufferBytes: receiveBufferBytes)
        let keepalive = self.keepalive
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(max(timeout, .milliseconds(1)))
            .channelInitializer { channel in
                let configured = channel.eventLoop.makeCompletedFuture {
                    try options.apply(to: channel, autoRead: false)
                    if let keepalive, let options = channel.syncOptions { try TCPKeepalive.apply(keepalive, to: options) }
                }
                guard let binding else { return configured }
                return configured.flatMap { binding.apply(to: channel) }
            }
        let connected: EventLoopFuture<any Channel>
        if addresses.count == 1 {
            connected = bootstrap.connect(to: addresses[0])
        } else {
            connected = bootstrap.resolver(FixedAddressResolver(addresses: addresses, eventLoop: eventLoop))
                .connect(host: name, port: port)
        }
        return connected.flatMapErrorThrowing { error in
            throw Self.failure(for: error)
        }
    }

    /// Maps a connection error to the reply code RFC 1928 gives it.
    static func failure(for error: any Error) -> ConnectFailure {
        switch error {
        case let failure as ConnectFailure:
            return failure
        case let error as OutboundBindingError:
            return ConnectFailure(code: .generalFailure, reason: error.reason, configuration: true)
        case let error as NIOConnectionError:
            // Report the most telling of the per-address failures.
            let failures = error.connectionErrors.map { failure(for: $0.error) }
            if let best = failures.min(by: { rank($0.code) < rank($1.code) }) { return best }
            return ConnectFailure(code: .hostUnreachable, reason: "no address to connect to")
        case let error as IOError:
            return ConnectFailure(code: code(forErrno: error.errnoCode), reason: String(cString: strerror(error.errnoCode)))
        case ChannelError.connectTimeout:
            return ConnectFailure(code: .ttlExpired, reason: "connect timed out")
        default:
            return ConnectFailure(code: .generalFailure, reason: "\(error)")
        }
    }

    static func code(forErrno code: Int32) -> SOCKSReplyCode {
        switch code {
        case ECONNREFUSED: return .connectionRefused
        case ENETUNREACH, ENETDOWN: return .networkUnreachable
        case EHOSTUNREACH, EHOSTDOWN: return .hostUnreachable
        case ETIMEDOUT: return .ttlExpired
        default: return .generalFailure
        }
    }

    /// Which failure to report when several addresses failed: the one that says most about the host.
    private static func rank(_ code: SOCKSReplyCode) -> Int {
        switch code {
        case .connectionRefused: return 0
        case .ttlExpired: return 1
        case .hostUnreachable: return 2
        case .networkUnreachable: return 3
        default: return 4
        }
    }
}

/// A resolver for NIO's happy-eyeballs connector that answers with addresses already looked up and
/// already allowed by the policy.
final class FixedAddressResolver: Resolver, Sendable {
    let addresses: [SocketAddress]
    let eventLoop: any EventLoop

    init(addresses: [SocketAddress], eventLoop: any EventLoop) {
        self.addresses = addresses
        self.eventLoop = eventLoop
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(addresses.filter { $0.protocol == .inet })
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(addresses.filter { $0.protocol == .inet6 })
    }

    func cancelQueries() {}
}
