import NIOCore
import NIOPosix
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Why an outbound connection failed, as the reply code the client gets and a reason for the log.
struct ConnectFailure: Error, CustomStringConvertible {
    var code: SOCKSReplyCode
    var reason: String
    var description: String { reason }
}

/// Opens the outbound TCP connection of a CONNECT: resolves names (both families), connects with
/// happy eyeballs under one timeout, and maps failures to RFC 1928 reply codes.
struct OutboundConnector: Sendable {
    let resolver: HostResolver
    let connectTimeout: TimeAmount
    let receiveBufferBytes: Int

    /// The addresses of a name (both families); a failure is reply 0x04, host unreachable.
    func resolve(_ name: String, port: Int, on eventLoop: any EventLoop, cancellation: LookupCancellation? = nil) -> EventLoopFuture<[SocketAddress]> {
        resolver.resolve(host: name, port: port, on: eventLoop, cancellation: cancellation).flatMapErrorThrowing { error in
            throw ConnectFailure(code: .hostUnreachable, reason: "\(error)")
        }
    }

    /// Connects to one of `addresses` (all of one name), on `eventLoop` so that the relay can join
    /// the new channel with the client's. The channel is returned with reading off: the relay turns
    /// it on once it is in place, so no byte the target sends first is lost.
    func connect(to addresses: [SocketAddress], name: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
        // ClientBootstrap sets TCP_NODELAY itself.
        let options = RelayChannelOptions(receiveBufferBytes: receiveBufferBytes)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try options.apply(to: channel, autoRead: false) }
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

extension SOCKSEndpoint {
    /// The socket address of an IP endpoint (not of a name).
    func socketAddress() throws -> SocketAddress {
        switch host {
        case .ipv4(let address):
            return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: Int(port))
        case .ipv6(let address):
            return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: Int(port))
        case .domain(let name):
            throw ConnectFailure(code: .generalFailure, reason: "\(name) is a name, not an address")
        }
    }
}
